"""CPU cost of session persistence tokens and PROXY protocol headers, per operation.

Measured with time.process_time (CPU used by this process: not inflated by waiting for a
loaded machine's CPU), best of 5 runs of 20000 calls. Interpreted unless run without
KGW_NO_EXTENSIONS (kgw_l7.session and kgw_l7.proxyproto are plain Python either way).

    KGW_NO_EXTENSIONS=1 .venv/bin/python bench/l7/session_proxyproto.py
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kgw_l7 import proxyproto
from kgw_l7.config import Backend, Endpoint, Rule, SessionPersistence
from kgw_l7.router import CompiledBackend, CompiledRule

RUNS, CALLS = 5, 20000


def cpu_per_call(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(RUNS):
        t0 = time.process_time()
        for _ in range(CALLS):
            fn()
        best = min(best, (time.process_time() - t0) / CALLS)
    return best


def main() -> None:
    b = Backend("ns/a:80", endpoints=tuple(Endpoint(f"10.0.0.{i}", 80) for i in range(1, 11)))
    rule = CompiledRule(Rule("ns/r/0", "ns/r", "gw", backends=(b,),
                             session=SessionPersistence(idle_timeout=60)),
                        CompiledBackend, b"k" * 32)
    pol, be = rule.session, rule.backends[0]
    assert pol is not None
    ep = ("10.0.0.3", 80)
    field = pol.response_header(None, be, ep, b"/", 1.8e9)
    assert field is not None
    headers = ((b"host", b"x"), (b"user-agent", b"curl"),
               (b"cookie", b"a=1; " + field[1].split(b";")[0]))
    src, dst = ("192.0.2.1", 1000), ("10.0.0.1", 80)
    v1 = proxyproto.encode_v1(src, dst) + b"GET / HTTP/1.1\r\n"
    v2 = proxyproto.encode_v2(src, dst) + b"GET / HTTP/1.1\r\n"
    cases: dict[str, Callable[[], object]] = {
        "session: find the request's session (cookie, 10 endpoints)":
            lambda: pol.find(headers, 1.8e9),
        "session: a new token (Set-Cookie)":
            lambda: pol.response_header(None, be, ep, b"/", 1.8e9),
        "PROXY v1: parse a TCP4 line": lambda: proxyproto.parse(v1),
        "PROXY v2: parse a TCP4 header": lambda: proxyproto.parse(v2),
        "PROXY v2: encode (to a backend)": lambda: proxyproto.encode_v2(src, dst),
    }
    for name, fn in cases.items():
        print(f"| {name} | {cpu_per_call(fn) * 1e6:.2f} us |")


if __name__ == "__main__":
    main()
