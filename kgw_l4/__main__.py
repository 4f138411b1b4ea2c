"""`python -m kgw_l4 agent`: run the L4 plane alone, from a JSON L4Config file.

Used by vm_tests and bench (and handy for debugging): applies --config at start and
again on SIGHUP, prints one JSON line per apply (generation, mode, errors) on stdout,
exits on SIGTERM/SIGINT leaving BPF state in place (like the real agent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from kgw_cli.env import Environment, ExitStatus
from kgw_cli.eventloop import run_async

from . import abi, configio
from .acceptor import KEEPALIVE_IDLE
from . import plane as plane_mod
from .plane import DEFAULT_MODE, MODES, open_plane


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kgw_l4")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agent", help="run the L4 plane from a JSON config file")
    a.add_argument("--config", required=True)
    a.add_argument("--mode", default=DEFAULT_MODE, choices=MODES)
    a.add_argument("--interfaces", default=None, help="comma-separated; default: all up")
    a.add_argument("--node-address", default=None)
    a.add_argument("--pin-dir", default=abi.PIN_DIR)
    a.add_argument("--sizes", default="{}", help="JSON overrides of kgw_l4.abi.SIZES")
    a.add_argument("--settings", default="{}", help="JSON kgw_settings fields")
    a.add_argument("--tcp-keepalive", type=int, default=KEEPALIVE_IDLE, metavar="SECONDS",
                   help="TCP keepalive of accepted connections: first probe after SECONDS "
                        "of silence (default %(default)s; 0: off)")
    a.add_argument("--gc-interval", type=float, default=None,
                   help="seconds between connection-table sweeps")
    return p.parse_args(argv)


async def _agent(ns: argparse.Namespace, env: Environment) -> ExitStatus:
    sizes = dict(abi.SIZES, **json.loads(ns.sizes))
    ifs = ns.interfaces.split(",") if ns.interfaces else None
    plane = await open_plane(ns.mode, ifs, ns.node_address, pin_dir=ns.pin_dir, sizes=sizes,
                             settings=json.loads(ns.settings) or None,
                             keepalive=ns.tcp_keepalive)
    if ns.gc_interval is not None:
        plane_mod.GC_INTERVAL = ns.gc_interval
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    reload.set()
    while not stop.is_set():
        if reload.is_set():
            reload.clear()
            try:
                with open(ns.config) as f:
                    cfg = configio.from_dict(json.load(f))
                await plane.apply(cfg)
                out = {"generation": cfg.generation, "mode": plane.mode, "errors": plane.errors()}
                last = getattr(plane, "last_apply", None)
                if last is not None:
                    out["slots_written"] = last.slots_written
                    out["backends_written"] = last.backends_written
            except (OSError, ValueError) as e:
                out = {"generation": None, "mode": plane.mode, "errors": {"config": str(e)}}
            env.out(json.dumps(out), flush=True)  # the caller reads it at once
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(reload.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
    await plane.close()
    return ExitStatus.SUCCESS


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    logging.basicConfig(level=logging.INFO, stream=env.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ns = _args(argv)
    # The event loop `kgw run` uses (uvloop for this loop only), so that vm_tests and
    # bench/l4 see the agent as it runs in production.
    try:
        return run_async(_agent(ns, env))
    except Exception as e:  # noqa: BLE001 — one clear line, not a traceback
        env.err(f"kgw_l4 agent: {e}")
        return ExitStatus.ERROR


if __name__ == "__main__":
    sys.exit(main())
