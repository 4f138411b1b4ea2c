"""kgw against an earlier kgw (and nginx) in one run: what a change did to CPU per request.

Runs bench.l7.run's setup three times side by side (this tree's kgw, the kgw of
``--old-tree``, nginx), all in front of one backend, and measures them in turns, each
round starting with the next one; a machine that drifts between separate runs drifts
for all three here. The old tree is a checkout of another revision with its own build,
for example::

    git worktree add /tmp/kgw-old a897783
    ln -s $PWD/.venv /tmp/kgw-old/.venv
    (cd /tmp/kgw-old && .venv/bin/python scripts/build_ext.py)
    .venv/bin/python -m bench.l7.ab --old-tree /tmp/kgw-old [--rounds 5] [--backend nginx]

Each kgw runs in its own process with its own tree first on sys.path (``--serve``), so
each imports its own kgw_l7 and bench config. Prints per-round figures, medians, and the
ratios new/old, new/nginx and old/nginx (of the medians, and the median of the per-round
ratios).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def serve(tree: Path, port: int, backend_port: int, pid_file: Path) -> None:
    """--serve: ``tree``'s L7 plane with its bench config until SIGTERM."""
    sys.path.insert(0, str(tree))
    from bench.l7 import run as tree_bench

    import kgw_l7

    kgw = tree_bench.Kgw(port, backend_port)
    # The worker runs compiled only when the tree's build is fresh (kgw_l7.build_is_fresh):
    # an edit after the last build means the interpreted modules are measured.
    pid_file.write_text(f"{kgw.pid} {'compiled' if kgw_l7.build_is_fresh() else 'interpreted'}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        kgw.stop()


def start_kgw(bench: Any, tree: Path, port: int, backend_port: int, tmp: Path, name: str,
              ) -> tuple[subprocess.Popen[bytes], int, str]:
    pid_file = tmp / f"{name}.pid"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(tree), str(port),
                             str(backend_port), str(pid_file)], cwd=tree)
    end = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        if time.monotonic() > end or proc.poll() is not None:
            raise RuntimeError(f"kgw from {tree} did not start")
        time.sleep(0.1)
    bench.wait_port(port)
    pid, build = pid_file.read_text().split()
    return proc, int(pid), build


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--serve"]:
        serve(Path(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4]))
        return 0
    sys.path.insert(0, str(ROOT))
    from bench.l7 import run as bench

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old-tree", required=True, type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=4)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--backend", choices=("echo", "nginx"), default="echo")
    args = p.parse_args(argv)
    if not (args.old_tree / "bench/l7/run.py").exists():
        print(f"{args.old_tree} is not a kgw checkout", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        bench.PROXY_CPUS, bench.LOAD_CPUS = {cpus[-1]}, set(cpus[:-1])
    tmp = Path(tempfile.mkdtemp(prefix="kgw-ab-"))
    backend_port = bench.free_port()
    backend = bench.start_backend(args.backend, backend_port, tmp)
    kgws: list[subprocess.Popen[bytes]] = []
    nginx = None
    results: dict[tuple[str, str], list[bench.Result]] = {}
    try:
        bench.wait_port(backend_port)
        proxies: dict[str, tuple[int, int]] = {}
        for name, tree in (("new", ROOT), ("old", args.old_tree.resolve())):
            port = bench.free_port()
            proc, pid, build = start_kgw(bench, tree, port, backend_port, tmp, name)
            kgws.append(proc)
            print(f"{name}: {tree}, {build}" + ("" if build == "compiled" else
                  " (WARNING: its build is stale or missing: scripts/build_ext.py)"),
                  flush=True)
            proxies[name] = (port, pid)
        nginx = bench.start_nginx(bench.free_port(), backend_port, tmp)
        proxies["nginx"] = (nginx.port, nginx.pid)
        subprocess.run(["wrk", "-t1", f"-c{args.connections}", "-d2s",
                        f"http://127.0.0.1:{backend_port}/plain"], capture_output=True,
                       timeout=30, check=True, preexec_fn=bench._pin_load)
        names = list(proxies)
        for rnd in range(args.rounds):
            k = rnd % len(names)
            for name in names[k:] + names[:k]:
                port, pid = proxies[name]
                for route in ("plain", "hdr"):
                    r = bench.run_wrk(port, route, args.duration, args.connections, pid, name)
                    results.setdefault((name, route), []).append(r)
                    print(f"{rnd + 1} {name:5} /{route:5} {r.rps:7.0f} req/s  cpu "
                          f"{r.cpu_us_per_req:5.1f} us/req (user {r.user_us_per_req:.1f} "
                          f"sys {r.sys_us_per_req:.1f})  errors {r.errors}", flush=True)
    finally:
        if nginx is not None:
            nginx.stop()
        for proc in kgws:
            proc.terminate()
            proc.wait(10)
        backend.terminate()
        backend.wait(5)
    print("medians (CPU µs/req, user, sys, req/s):")
    for (name, route), rs in results.items():
        print(f"  {name:5} /{route:5} {statistics.median(r.cpu_us_per_req for r in rs):5.1f} "
              f"{statistics.median(r.user_us_per_req for r in rs):5.1f} "
              f"{statistics.median(r.sys_us_per_req for r in rs):5.1f} "
              f"{statistics.median(r.rps for r in rs):7.0f}")
    for route in ("plain", "hdr"):
        for a, b in (("new", "old"), ("new", "nginx"), ("old", "nginx")):
            xs, ys = results[(a, route)], results[(b, route)]
            of_medians = (statistics.median(x.cpu_us_per_req for x in xs)
                          / statistics.median(y.cpu_us_per_req for y in ys))
            per_round = [x.cpu_us_per_req / y.cpu_us_per_req for x, y in zip(xs, ys)]
            print(f"  /{route} {a}/{b}: {of_medians:.2f} (median of per-round ratios "
                  f"{statistics.median(per_round):.2f}; rounds "
                  f"{', '.join(f'{x:.2f}' for x in per_round)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
