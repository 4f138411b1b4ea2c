"""The export thread's work per sampled request: its SDK spans built from what the
request path recorded (``kgw_l7.tracing.Tracer._spans``: a server span and one client
span) and encoded as OTLP protobuf (the SDK exporter's encoder), without the HTTP post.

This runs in each worker's export thread, off the request path but under the same GIL:
it is CPU the worker spends per sampled request on top of the request path's share
(``bench.l7.hotpath --tracing-sample 1``).

Usage: ``.venv/bin/python -m bench.l7.tracing_export [--requests 2000] [--repeat 5]``;
prints the best microseconds per request for building, and for building and encoding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402

from kgw_l7.tracing import Tracer  # noqa: E402


def records(tracer: Tracer, n: int) -> list[tuple]:
    out = []
    for _ in range(n):
        tr = tracer.begin(((b"host", b"127.0.0.1:8080"), (b"x-bench", b"yes")))
        tracer.begin_try(tr, "127.0.0.1", 9)
        tracer.end(tr, b"GET", b"/hdr?x=1", "bench/bench/rule-0", 200, b"127.0.0.1",
                   b"127.0.0.1:8080", b"http", b"1.1", None)
        out.append(tracer._queue.popleft()[1:])  # (without the tracer)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    tracer = Tracer("http://127.0.0.1:9/v1/traces", "always_on", 1.0, 1.0,
                    max_queue=1 << 40)
    tracer._resource = Resource.create({"service.name": "kgw"})
    build = both = float("inf")
    for _ in range(args.repeat):
        items = records(tracer, args.requests)
        t0 = time.perf_counter()
        spans = [s for item in items for s in tracer._spans(item)]
        t1 = time.perf_counter()
        for i in range(0, len(spans), 1024):  # (batches of 512 requests)
            encode_spans(spans[i:i + 1024]).SerializeToString()
        t2 = time.perf_counter()
        build = min(build, (t1 - t0) / args.requests)
        both = min(both, (t2 - t0) / args.requests)
    print(f"spans built        {build * 1e6:.2f} us/request (server + client span)")
    print(f"built and encoded  {both * 1e6:.2f} us/request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
