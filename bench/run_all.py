"""`make bench`: every benchmark, one after the other, each writing its own results.

    .venv/bin/python -m bench.run_all           # controller, L7 (wrk vs nginx/haproxy), L7 reload, L4 (root)

Each benchmark is bounded in time and talks only to loopback or to network namespaces it
creates; see the module docstrings and bench/results/*.md for what they measure.
"""  # noqa: E501 (command lines)

from __future__ import annotations

import os
import subprocess
import sys

BENCHES = [
    ("controller", ["-m", "bench.controller_bench"]),
    ("l7", ["-m", "bench.l7.run", "--duration", "5"]),
    ("l7-reload", ["-m", "bench.l7.reload", "--routes", "10000", "--changes", "10"]),
    ("l4", ["-m", "bench.l4.run"]),
]


def main() -> int:
    failed = []
    for name, args in BENCHES:
        if name == "l4" and os.geteuid() != 0:
            print("== l4: skipped (needs root: network namespaces and BPF)")
            continue
        print(f"== {name}: {' '.join(['python'] + args)}", flush=True)
        if subprocess.run([sys.executable, *args]).returncode != 0:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
