"""Controller benchmark: translation time, file-write-to-publish latency, memory per route.

    .venv/bin/python -m bench.controller_bench [--routes 1000 10000] [--changes 20]

For each size N: N HTTPRoutes (each with its own hostname and two rules) attached to one
Gateway, with their Services and EndpointSlices, in files of 100 routes each. Measures

* the initial load: reading + defaulting + validating the files, and full translation;
* write -> publish: the time from writing one changed route file (a new backend port in
  one route) to the supervisor having the new data-plane configuration, through the
  real file watcher (median and max over --changes edits);
* resident memory per route: RSS growth of this process after loading, divided by N.

No data plane is attached: this measures the controller alone (issue #3's benchmark
measures change-to-traffic through the proxy).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from controller.files import FileSource
from controller.supervisor import Supervisor

PER_FILE = 100

HEADER = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: bench}
spec:
  gatewayClassName: kgw
  listeners: [{name: http, protocol: HTTP, port: 8080, allowedRoutes: {namespaces: {from: All}}}]
"""


def route_doc(i: int, port: int = 80) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: route-{i}, namespace: bench}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [host-{i}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{{name: x-version, value: v2}}]}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-route, value: route-{i}}}]}}
    backendRefs: [{{name: svc-{i % 50}, port: {port}}}]
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: svc-{i % 50}, port: 80, weight: 9}}, {{name: svc-{(i + 1) % 50}, port: 80}}]
"""  # noqa: E501 (data)


def services_doc() -> str:
    docs = []
    for s in range(50):
        docs.append(f"""\
apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: bench}}
spec: {{ports: [{{name: http, port: 80}}, {{name: alt, port: 81}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-{s}-x1, namespace: bench, labels: {{kubernetes.io/service-name: svc-{s}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}, {{name: alt, port: 8081}}]
endpoints: [{{addresses: [127.0.1.{s + 1}], conditions: {{ready: true}}}}]
""")
    return "---\n".join(docs)


def write_tree(d: Path, n: int) -> None:
    (d / "gateway.yaml").write_text(HEADER)
    (d / "services.yaml").write_text(services_doc())
    for f in range(0, n, PER_FILE):
        (d / f"routes-{f // PER_FILE:04d}.yaml").write_text(
            "---\n".join(route_doc(i) for i in range(f, min(n, f + PER_FILE))))


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def measure(n: int, changes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kgw-bench-") as tmp:
        d = Path(tmp)
        write_tree(d, n)
        gc.collect()
        rss0 = rss_kib()
        sup = Supervisor(FileSource(d, debounce_ms=5))
        batches = sup.source.batches().__aiter__()
        t0 = time.perf_counter()
        first = await batches.__anext__()
        t1 = time.perf_counter()
        await sup.apply(first)
        t2 = time.perf_counter()
        gc.collect()
        rss1 = rss_kib()
        assert sup.translation is not None
        assert len(sup.translation.l7.listeners[0].virtual_hosts) == n, "every route must be served"

        async def pump() -> None:
            async for batch in batches:
                await sup.apply(batch)

        pumper = asyncio.create_task(pump())
        await asyncio.sleep(0.3)  # let the watcher start
        latencies = []
        ports = {}  # route -> its current backend port; every edit flips one route's port
        for k in range(changes):
            i = (k * 37) % n
            target = d / f"routes-{i // PER_FILE:04d}.yaml"
            ports[i] = 81 if ports.get(i, 80) == 80 else 80
            text = "---\n".join(route_doc(j, ports.get(j, 80))
                                for j in range(i - i % PER_FILE,
                                               min(n, i - i % PER_FILE + PER_FILE)))
            gen = sup.generation
            start = time.perf_counter()
            target.write_text(text)
            while sup.generation == gen:
                await asyncio.sleep(0.0005)
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.05)
        pumper.cancel()
        await sup.source.close()
        return {
            "routes": n,
            "load_s": t1 - t0,
            "translate_full_s": t2 - t1,
            "write_to_publish_median_ms": statistics.median(latencies) * 1000,
            "write_to_publish_max_ms": max(latencies) * 1000,
            "rss_per_route_kib": (rss1 - rss0) / n,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    print(f"# kgw controller benchmark: {' '.join(sys.argv)}")
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print("| routes | load files | full translate | write->publish median | max | RSS/route |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.routes:
        r = asyncio.run(measure(n, args.changes))
        print(f"| {n} | {r['load_s'] * 1000:.0f} ms | {r['translate_full_s'] * 1000:.0f} ms | "
              f"{r['write_to_publish_median_ms']:.1f} ms | {r['write_to_publish_max_ms']:.1f} ms | "
              f"{r['rss_per_route_kib']:.1f} KiB |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
