"""Cost of the kernel plane's periodic drift check (kgw_l4.programmer.Programmer.check).

Creates kgw's maps at their default sizes in a private BPF filesystem (this process
unshares its mount namespace first, so nothing is pinned on the machine), programs
FRONTENDS frontends of BACKENDS backends each, and times ``check()`` on intact maps: the
CPU time one check costs the agent every DRIFT_INTERVAL seconds (it reads at most
DRIFT_MAGLEV_ROWS Maglev rows per check, in turn), and what reading every row at once
would cost. Nothing is compiled or attached: the maps are made with bpftool, the way bcc
would pin them.

  sudo .venv/bin/python -m bench.l4.drift [--frontends 1,8,64] [--backends 4] [--runs 20]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import time

from kgw_l4 import abi, loader, plane
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.maps import MAP_ARRAY, MAP_HASH, MAP_LRU_HASH, MAP_PERCPU_ARRAY, PinnedMapSet
from kgw_l4.programmer import Programmer

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
TYPES = {MAP_HASH: "hash", MAP_ARRAY: "array", MAP_LRU_HASH: "lru_hash",
         MAP_PERCPU_ARRAY: "percpu_array"}


def private_bpffs(path: str = "/sys/fs/bpf") -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE,
                                                    None) != 0:
        raise OSError(ctypes.get_errno(), "cannot make a private mount namespace (root needed)")
    if libc.mount(b"bpf", path.encode(), b"bpf", 0, None) != 0:
        raise OSError(ctypes.get_errno(), f"cannot mount bpffs at {path}")


def make_maps(pin_dir: str) -> None:
    os.makedirs(pin_dir, exist_ok=True)
    for name, info in loader.expected_maps().items():
        subprocess.run(["bpftool", "map", "create", f"{pin_dir}/{name}", "type",
                        TYPES[info.map_type],
                        "key", str(info.key_size), "value", str(info.value_size),
                        "entries", str(info.max_entries), "name", name], check=True)


def config(frontends: int, backends: int) -> L4Config:
    return L4Config(tuple(
        Frontend(f"ns/gw/l{i}", "10.0.0.1", 1000 + i, "TCP", (BackendGroup("ns/svc:80", 1, tuple(
            Endpoint(f"10.{1 + i // 250}.{i % 250}.{j + 1}", 80) for j in range(backends))),))
        for i in range(frontends)))


def timed(check, runs: int) -> float:
    """Median CPU milliseconds of check() on intact maps."""
    cpu = []
    for _ in range(runs):
        t0 = time.thread_time()
        assert not check()
        cpu.append(time.thread_time() - t0)
    return statistics.median(cpu) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.l4.drift")
    ap.add_argument("--frontends", default="1,8,64")
    ap.add_argument("--backends", type=int, default=4, help="per frontend")
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    private_bpffs()
    pin_dir = "/sys/fs/bpf/kgw-drift-bench"
    make_maps(pin_dir)
    maps = PinnedMapSet(pin_dir)
    budget = plane.DRIFT_MAGLEV_ROWS
    print(f"drift check, default sizes (Maglev row {abi.SIZES['KGW_MAGLEV_SIZE']} slots, "
          f"{abi.SIZES['KGW_MAX_BACKENDS']} backend entries), every {plane.DRIFT_INTERVAL:g} s, "
          f"{budget} Maglev rows per check; median of {a.runs}")
    print(f"{'frontends':>9} {'backends':>8} {'cpu ms/check':>12} {'% of a core':>11} "
          f"{'every row within':>16} {'all rows: cpu ms':>16}")
    for n in (int(x) for x in a.frontends.split(",")):
        p = Programmer(maps, snat_for=lambda _a: "10.0.0.1", sizes=abi.SIZES)
        p.apply(config(n, a.backends))
        assert not p.check(), "fresh maps must be intact"
        per_check = timed(lambda: p.check(max_rows=budget), a.runs)  # noqa: B023 (called now)
        every_row = timed(p.check, a.runs)
        within = -(-n // budget) * plane.DRIFT_INTERVAL
        print(f"{n:>9} {n * a.backends:>8} {per_check:>12.2f} "
              f"{per_check / 10 / plane.DRIFT_INTERVAL:>11.3f} {within:>14g} s {every_row:>16.2f}")
        p.apply(L4Config())
    maps.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
