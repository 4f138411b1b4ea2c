"""Prometheus exposition of the workers' counters, summed over workers.

Workers keep plain dict counters (``kgw_l7.stats``); this module merges their snapshots
and renders them with prometheus_client's metric families, so the text format is the
library's, not ours.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)

from kgw_l7.stats import DURATION_BUCKETS


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"requests": {}, "durations": {}, "connect_failures": {},
                             "active_connections": 0, "connections_total": 0,
                             "rejected_connections": 0, "generations": [], "workers": 0}
    for snap in snapshots:
        total["workers"] += 1
        for k, v in snap["requests"].items():
            total["requests"][k] = total["requests"].get(k, 0) + v
        for k, v in snap["durations"].items():
            cur = total["durations"].get(k)
            total["durations"][k] = list(v) if cur is None else [a + b for a, b in zip(cur, v)]
        for k, v in snap["connect_failures"].items():
            total["connect_failures"][k] = total["connect_failures"].get(k, 0) + v
        for key in ("active_connections", "connections_total", "rejected_connections"):
            total[key] += snap[key]
        total["generations"].append(snap["generation"])
    return total


class _Collector:
    def __init__(self, merged: dict[str, Any]) -> None:
        self.m = merged

    def collect(self) -> Iterator[Metric]:
        m = self.m
        req = CounterMetricFamily("kgw_l7_requests", "HTTP requests answered by the L7 proxy",
                                  labels=["gateway", "route", "backend", "code"])
        for (gw, route, backend, code), n in sorted(m["requests"].items(),
                                                    key=lambda kv: tuple(map(str, kv[0]))):
            req.add_metric([gw, route, backend, str(code)], n)
        yield req
        hist = HistogramMetricFamily(
            "kgw_l7_request_duration_seconds",
            "Time from the request head to the end of the response",
            labels=["gateway", "route"])
        for (gw, route), counts in sorted(m["durations"].items()):
            buckets = []
            acc = 0.0
            for bound, n in zip(DURATION_BUCKETS, counts):
                acc += n
                buckets.append((repr(bound), acc))
            acc += counts[len(DURATION_BUCKETS)]
            buckets.append(("+Inf", acc))
            hist.add_metric([gw, route], buckets, counts[-1])
        yield hist
        cf = CounterMetricFamily("kgw_l7_upstream_connect_failures",
                                 "Failed connection attempts to backend endpoints",
                                 labels=["backend"])
        for backend, n in sorted(m["connect_failures"].items()):
            cf.add_metric([backend], n)
        yield cf
        yield GaugeMetricFamily("kgw_l7_active_connections", "Open client connections",
                                value=m["active_connections"])
        yield CounterMetricFamily("kgw_l7_connections", "Accepted client connections",
                                  value=m["connections_total"])
        yield CounterMetricFamily("kgw_l7_rejected_connections",
                                  "Connections closed at once: worker connection limit",
                                  value=m["rejected_connections"])
        gens = m["generations"]
        yield GaugeMetricFamily("kgw_l7_config_generation",
                                "Config generation every worker serves (the oldest)",
                                value=min(gens) if gens else 0)
        yield GaugeMetricFamily("kgw_l7_workers", "Running L7 worker processes",
                                value=m["workers"])


def render(snapshots: Iterable[dict[str, Any]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(merge(snapshots)))  # type: ignore[arg-type]
    return generate_latest(registry)
