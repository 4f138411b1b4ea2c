"""What choosing an endpoint costs per request, by algorithm (issue 20: least request and
consistent hash within 1 us of round robin).

Each run makes ``--picks`` choices with one algorithm among 10 endpoints through
``CompiledBackend.pick`` (what the exchange calls), the hash with its key taken from a
request's headers (``KeySource.key``) as the exchange does. The machine is shared, so
the figure to compare is instructions, measured with callgrind: run once with
``--picks 0`` and once with N, and divide the difference by N::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python -m bench.l7.balance --algorithm LeastRequest --picks 50000 --repeat 1

(``bench/results/balance.md`` has the commands and figures.) Without valgrind it prints
the best nanoseconds per pick of five batches (noisy on a loaded machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import kgw_l7  # noqa: E402
from kgw_l7.config import Backend, Endpoint, HashOn, LoadBalancer  # noqa: E402
from kgw_l7.router import CompiledBackend  # noqa: E402

HEADERS = ((b"host", b"example.com"), (b"user-agent", b"wrk"), (b"accept", b"*/*"),
           (b"x-user", b"alice"))


def backend(algorithm: str) -> CompiledBackend:
    eps = tuple(Endpoint(f"10.0.0.{i}", 8080) for i in range(1, 11))
    if algorithm == "default":  # no policy: the plain round robin every backend had
        return CompiledBackend(Backend("bench/svc:80", endpoints=eps))
    lb = LoadBalancer(algorithm,  # type: ignore[arg-type]
                      hash_on=HashOn(header="x-user") if algorithm == "ConsistentHash" else None)
    return CompiledBackend(Backend("bench/svc:80", endpoints=eps, load_balancer=lb))


def run(b: CompiledBackend, picks: int) -> None:
    keys = b.keys
    if keys is None:
        for _ in range(picks):
            b.pick(None)
    else:
        for _ in range(picks):
            b.pick(keys.key(HEADERS, b"", b"10.1.2.3"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algorithm", default="default",
                   choices=("default", "RoundRobin", "Random", "LeastRequest", "ConsistentHash"))
    p.add_argument("--picks", type=int, default=200000)
    p.add_argument("--repeat", type=int, default=5, help="batches (1 under callgrind)")
    args = p.parse_args(argv)
    b = backend(args.algorithm)
    run(b, 10)  # (warm: the first pick computes the usable set)
    if args.picks:
        best = min(_timed(b, args.picks) for _ in range(args.repeat))
        print(f"{args.algorithm}: {best * 1e9 / args.picks:.0f} ns per pick "
              f"(router and balance {'compiled' if kgw_l7.build_is_fresh() else 'interpreted'})")
    return 0


def _timed(b: CompiledBackend, picks: int) -> float:
    t0 = time.perf_counter()
    run(b, picks)
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
