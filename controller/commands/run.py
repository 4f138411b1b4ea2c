"""``kgw run -c DIR``: serve a directory of Gateway API objects (standalone mode)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from controller import signals
from controller.files import FileSource
from controller.node import discover_addresses
from controller.supervisor import Supervisor, serve_admin
from controller.translate import Options
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.eventloop import run_async

log = logging.getLogger("kgw")


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    logging.basicConfig(level=args.log_level.upper(), stream=env.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_async(_serve(args))
    except OSError as exc:
        env.err(f"error: {exc}")
        return ExitStatus.ERROR


async def _serve(args: argparse.Namespace) -> ExitStatus:
    from kgw_l4.plane import open_plane, sizes_with_splice_backlog
    from kgw_l4.snat import fixed_source
    from kgw_l7.plane import L7Plane

    # pyroute2 runs an event loop of its own: it must not be called on this one
    nodes = (args.node_address,) if args.node_address else await asyncio.to_thread(discover_addresses)
    interfaces = args.l4_interfaces.split(",") if args.l4_interfaces else None
    # Without --node-address each backend is NATed from the source of the route to it
    # (kgw_l4.snat), not from one discovered address.
    snat = fixed_source([args.node_address] if args.node_address else [])
    # First: with pins in place it takes their lock, and a second instance must stop
    # before starting anything.
    l4 = await open_plane(args.l4_mode, interfaces=interfaces, node_address=snat, pin_dir=args.l4_pin_dir,
                          sizes=sizes_with_splice_backlog(args.l4_splice_backlog))
    source = FileSource(args.config)
    l7 = L7Plane(workers=args.workers, access_log=args.access_log, drain_timeout=args.drain_timeout,
                 response_timeout=args.response_timeout, ignore_client_abort=args.ignore_client_abort)
    await l7.start()
    sup = Supervisor(source, options=Options(node_addresses=nodes), l7=l7, l4=l4)
    admin = await serve_admin(sup, args.admin_address)
    log.info("admin API on http://%s (l4 mode: %s)", args.admin_address, l4.mode)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    received: list[int] = []
    signals.install(loop, lambda sig: (received.append(sig), stop.set()), source.rescan)
    runner = asyncio.create_task(sup.run())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    status = ExitStatus.SUCCESS
    if runner in done and runner.exception() is not None:
        log.error("configuration loop failed: %r", runner.exception())
        status = ExitStatus.ERROR
    log.info("shutting down")
    # SIGTERM (Kubernetes, systemd): not ready first, accepting for --drain-delay; Ctrl-C: no delay.
    await sup.drain(args.drain_delay if received[:1] == [signal.SIGTERM] else 0.0)
    await source.close()
    runner.cancel()
    stopper.cancel()
    await l7.close(drain_timeout=args.drain_timeout)
    await admin.close()
    await l4.close()
    return status
