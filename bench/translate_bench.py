"""Translation cost: full translate() and one-route incremental Translator.update().

Store: one Gateway (HTTP :80), N HTTPRoutes each with its own hostname and one backend
Service with a ready EndpointSlice (shared by groups of routes). Run:

    .venv/bin/python bench/translate_bench.py [--sizes 1000 10000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.objects import ObjectKey  # noqa: E402
from controller.source import Event, EventType  # noqa: E402
from controller.store import Store  # noqa: E402
from controller.translate import Translator, translate  # noqa: E402


def objects(n: int, services: int = 100) -> list[dict]:
    objs: list[dict] = [
        {"kind": "GatewayClass", "metadata": {"name": "kgw", "generation": 1},
         "spec": {"controllerName": "kgw.dev/gateway-controller"}},
        {"kind": "Gateway", "metadata": {"name": "gw", "namespace": "default", "generation": 1},
         "spec": {"gatewayClassName": "kgw",
                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
    ]
    for s in range(services):
        objs.append({"kind": "Service", "metadata": {"name": f"svc{s}", "namespace": "default"},
                     "spec": {"ports": [{"name": "http", "port": 8080}]}})
        objs.append({"kind": "EndpointSlice",
                     "metadata": {"name": f"svc{s}-a", "namespace": "default",
                                  "labels": {"kubernetes.io/service-name": f"svc{s}"}},
                     "ports": [{"name": "http", "port": 8080}],
                     "endpoints": [{"addresses": [f"10.0.{s // 250}.{s % 250 + 1}"],
                                    "conditions": {"ready": True}}]})
    for i in range(n):
        objs.append(route(i, services))
    return objs


def route(i: int, services: int, version: int = 0) -> dict:
    return {"kind": "HTTPRoute",
            "metadata": {"name": f"r{i}", "namespace": "default", "generation": 1 + version,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"parentRefs": [{"name": "gw"}], "hostnames": [f"h{i}.example.com"],
                     "rules": [{"matches": [
                         {"path": {"type": "PathPrefix", "value": f"/v{version}"}}],
                                "backendRefs": [{"name": f"svc{i % services}", "port": 8080}]}]}}


def store_of(objs: list[dict]) -> Store:
    st = Store()
    st.apply(Event(EventType.ADDED, ObjectKey.of(o), o, "1", 1) for o in objs)
    return st


def bench(n: int, repeat: int) -> list[str]:
    st = store_of(objects(n))
    t0 = time.perf_counter()
    full = translate(st)
    t_full = time.perf_counter() - t0
    tr = Translator()
    t0 = time.perf_counter()
    tr.update(st, set())
    t_first = time.perf_counter() - t0
    times = []
    for v in range(1, repeat + 1):
        r = route(v % n, 100, v)
        key = ObjectKey.of(r)
        changed = st.apply([Event(EventType.MODIFIED, key, r, str(v), v)])
        t0 = time.perf_counter()
        tr.update(st, changed)
        times.append(time.perf_counter() - t0)
    assert len(full.l7.listeners[0].virtual_hosts) == n
    # a Gateway change re-resolves every route attached to it
    gw = dict(st.get("Gateway", "default", "gw"))
    gw["spec"] = {**gw["spec"], "listeners": gw["spec"]["listeners"]
                  + [{"name": "alt", "port": 8080, "protocol": "HTTP"}]}
    changed = st.apply([Event(EventType.MODIFIED, ObjectKey.of(gw), gw, "g", 2)])
    t0 = time.perf_counter()
    tr.update(st, changed)
    t_gw = time.perf_counter() - t0
    return [
        f"routes={n}: full translate() {t_full * 1000:.0f} ms; Translator first update "
        f"{t_first * 1000:.0f} ms",
        f"routes={n}: one-route update: median {statistics.median(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms over {repeat} changes",
        f"routes={n}: Gateway change (adds a listener; all its routes re-resolved): "
        f"{t_gw * 1000:.0f} ms",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    for n in args.sizes:
        for line in bench(n, args.repeat):
            print(line, flush=True)


if __name__ == "__main__":
    main()
