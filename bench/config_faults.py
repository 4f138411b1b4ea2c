"""Configuration faults under load: what `kgw run` (every default, a private host) does.

    .venv/bin/python -m bench.config_faults bigfile   # /readyz while a maximum-size file is read
    .venv/bin/python -m bench.config_faults move      # requests failed across a config-directory move
    .venv/bin/python -m bench.config_faults sighup    # requests lost across SIGHUPs

Needs root (tests/netns.py: a network namespace with its own bpffs). ``kgw run -c`` serves
a copy of examples/ with the three echo backends; sequential requests go through the
gateway from a thread inside the host meanwhile (tests/test_run_reliability.py's Load).

* bigfile: a file of HTTPRoutes just under the size cap (28,000 routes, attached to
  nothing they may attach to) is moved into the directory; /readyz is probed every 20 ms
  until the source holds the new objects. Prints the time to that point, the probes'
  worst latency, and the peak RSS of the supervisor and its children.
* move: the directory is renamed away for 2 s and back.
* sighup: five SIGHUPs, 0.5 s apart.
"""  # noqa: E501 (command lines)

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.yamlload import MAX_FILE_BYTES  # noqa: E402
from tests.helpers import eventually, http_get  # noqa: E402
from tests.netns import private_host, kgw_argv  # noqa: E402
from tests.test_run_reliability import ADMIN, BACKENDS, Load, big_routes, search  # noqa: E402


def _objects() -> float:
    body = http_get(f"{ADMIN}/metrics")[1].decode()
    return float(re.search(r"^kgw_source_objects (\S+)", body, re.M).group(1))


def _peak_mib(pid: int) -> int:
    return int(
        re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) // 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.config_faults")
    p.add_argument("what", choices=("bigfile", "move", "sighup"))
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="kgw-faults-"))
    conf = tmp / "conf"
    shutil.copytree(ROOT / "examples", conf)
    try:
        with private_host() as host:
            for name, port in BACKENDS:
                host.popen(kgw_argv("echo", "--port", str(port), "--pod", f"{name}-x",
                                    "--namespace", "demo"),
                           stdout=subprocess.DEVNULL)
            kgw = host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
                             stderr=(tmp / "kgw.log").open("wb"))
            eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
            eventually(lambda: host.call(search), timeout=10)
            load = Load(host)
            time.sleep(1)
            if args.what == "bigfile":
                big = tmp / "big.yaml"
                big.write_text(big_routes(MAX_FILE_BYTES, "{name: demo, namespace: demo}"))
                latencies: list[float] = []

                def probe() -> float:
                    before, t0 = _objects(), time.monotonic()
                    shutil.move(big, conf / "big.yaml")
                    while _objects() < before + 1000 and time.monotonic() - t0 < 120:
                        started = time.monotonic()
                        http_get(f"{ADMIN}/readyz", timeout=60)
                        latencies.append(time.monotonic() - started)
                        time.sleep(0.02)
                    return time.monotonic() - t0

                took = host.call(probe)
                kids = [int(c) for t in Path(f"/proc/{kgw.pid}/task").iterdir()
                        for c in (t / "children").read_text().split()]
                peaks = {Path(f"/proc/{k}/cmdline").read_bytes().split(b"\0")[
                    2].decode(): _peak_mib(k) for k in kids}
                print(f"bigfile: {MAX_FILE_BYTES} bytes cap; objects live after {took:.2f} s; "
                      "/readyz: "
                      f"{len(latencies)} probes, worst {max(latencies) * 1000:.0f} ms; peak RSS "
                      f"MiB: supervisor {_peak_mib(kgw.pid)}, {peaks}")
            elif args.what == "move":
                conf.rename(tmp / "away")
                time.sleep(2)
                (tmp / "away").rename(conf)
                time.sleep(3)
            else:
                for _ in range(5):
                    os.kill(kgw.pid, signal.SIGHUP)
                    time.sleep(0.5)
                time.sleep(1)
            load.stop()
            print(f"{args.what}: {load.ok} requests ok, {len(load.failed)} failed "
                  f"{load.failed[:2]}; kgw running: {kgw.poll() is None}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
