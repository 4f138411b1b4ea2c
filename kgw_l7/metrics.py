"""Prometheus exposition of the workers' counters, summed over workers.

Workers keep plain dict counters (``kgw_l7.stats``); this module merges their snapshots
and renders them with prometheus_client's metric families, so the text format is the
library's, not ours.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)

from kgw_l7.stats import CONNECT_BUCKETS, DURATION_BUCKETS


_COUNTED = ("requests", "connect_failures", "rejected_connections", "tls_refusals",
            "upstream_overflows", "outlier_ejections", "http2_errors", "http2_resets",
            "access_log_dropped", "tracing_spans_dropped", "rate_limited",
            "global_ratelimit_decisions", "global_ratelimit_errors", "retries")
#: Lists summed element-wise (histograms, byte pairs).
_LISTS = ("durations", "body_bytes", "connect_times")
#: Plain numbers summed over workers.
_SUMMED = ("connections_total", "http2_connections", "access_log_write_errors",
           "tracing_spans_exported", "rate_limit_table_full", "global_ratelimit_round_trips")


def _counters() -> dict[str, Any]:
    out: dict[str, Any] = {key: {} for key in _COUNTED + _LISTS}
    for key in _SUMMED:
        out[key] = 0
    return out


def _accumulate(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Add the counters of one snapshot (or retired base) into ``into``."""
    for key in _COUNTED:
        counts = into[key]
        for k, v in part.get(key, {}).items():
            counts[k] = counts.get(k, 0) + v
    for key in _LISTS:
        lists = into[key]
        for k, v in part.get(key, {}).items():
            cur = lists.get(k)
            lists[k] = list(v) if cur is None else [a + b for a, b in zip(cur, v)]
    for key in _SUMMED:
        into[key] += part.get(key, 0)


def retire(base: dict[str, Any] | None, snap: dict[str, Any]) -> dict[str, Any]:
    """``base`` plus the counters (not the gauges) of a worker that exited: kept by the
    supervisor so that summed counters never go backwards when a worker dies."""
    out = _counters()
    if base is not None:
        _accumulate(out, base)
    _accumulate(out, snap)
    return out


def merge(snapshots: Iterable[dict[str, Any]],
          retired: dict[str, Any] | None = None, worker_restarts: int = 0) -> dict[str, Any]:
    """The live workers' snapshots summed, plus the retired workers' counters."""
    total = _counters()
    total.update({"active_connections": 0, "generations": [], "workers": 0,
                  "listener_connections": {}, "worker_restarts": worker_restarts})
    if retired is not None:
        _accumulate(total, retired)
    per_listener = total["listener_connections"]
    for snap in snapshots:
        _accumulate(total, snap)
        total["workers"] += 1
        total["active_connections"] += snap["active_connections"]
        total["generations"].append(snap["generation"])
        for name, n in snap.get("listener_connections", {}).items():
            per_listener[name] = per_listener.get(name, 0) + n
    return total


def render(snapshots: Iterable[dict[str, Any]],
           retired: dict[str, Any] | None = None, worker_restarts: int = 0) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(merge(snapshots, retired, worker_restarts)))
    return generate_latest(registry)


def _histogram(name: str, doc: str, label: str | tuple[str, ...], bounds: tuple[float, ...],
               series: dict[Any, list[float]]) -> HistogramMetricFamily:
    """``series``: label value(s) -> [bucket counts..., +Inf count, sum] (not cumulative)."""
    labels = [label] if isinstance(label, str) else list(label)
    hist = HistogramMetricFamily(name, doc, labels=labels)
    for key, counts in sorted(series.items()):
        buckets = []
        acc = 0.0
        for bound, n in zip(bounds, counts):
            acc += n
            buckets.append((repr(bound), acc))
        acc += counts[len(bounds)]
        buckets.append(("+Inf", acc))
        hist.add_metric(list(key) if isinstance(key, tuple) else [key], buckets,
                        counts[len(bounds) + 1])
    return hist


def _filled(family: CounterMetricFamily, counts: dict[Any, Any]) -> CounterMetricFamily:
    """``family`` with one sample per entry of ``counts``: label values (a tuple, or one
    value) -> count, in label order."""
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


class _Collector:
    def __init__(self, merged: dict[str, Any]) -> None:
        self.m = merged

    def collect(self) -> Iterator[Metric]:
        m = self.m
        req = CounterMetricFamily(
            "kgw_l7_requests", "HTTP requests answered by the L7 proxy (those refused before "
            "routing with an empty route)", labels=["listener", "gateway", "route", "backend",
                                                   "code"])
        for (lst, gw, route, backend, code), n in sorted(
                m["requests"].items(), key=lambda kv: tuple(map(str, kv[0]))):
            req.add_metric([lst, gw, route, backend, str(code)], n)
        yield req
        yield _histogram("kgw_l7_request_duration_seconds",
                         "Time from the request head to the end of the response",
                         ("gateway", "route"), DURATION_BUCKETS, m["durations"])
        received = CounterMetricFamily(
            "kgw_l7_request_body_bytes", "Request body bytes received from clients",
            labels=["gateway", "route"])
        sent = CounterMetricFamily(
            "kgw_l7_response_body_bytes", "Response body bytes sent to clients",
            labels=["gateway", "route"])
        for (gw, route), (rx, tx) in sorted(m["body_bytes"].items()):
            received.add_metric([gw, route], rx)
            sent.add_metric([gw, route], tx)
        yield received
        yield sent
        yield _filled(CounterMetricFamily(
            "kgw_l7_retries", "Tries after the first (a route rule's retry policy, or a "
            "pooled connection the backend had closed)", labels=["gateway", "route"]), m["retries"])
        yield _histogram("kgw_l7_upstream_connect_duration_seconds",
                         "Time to open a new backend connection (TCP, and TLS when the "
                         "backend has a BackendTLSPolicy)", "backend", CONNECT_BUCKETS,
                         m["connect_times"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_upstream_connect_failures", "Failed connection attempts to backend "
            "endpoints", labels=["backend"]), m["connect_failures"])
        yield GaugeMetricFamily("kgw_l7_active_connections", "Open client connections",
                                value=m["active_connections"])
        per = GaugeMetricFamily("kgw_l7_listener_active_connections",
                                "Open client connections per listener", labels=["listener"])
        for name, n in sorted(m["listener_connections"].items()):
            per.add_metric([name], n)
        yield per
        yield CounterMetricFamily("kgw_l7_connections", "Accepted client connections",
                                  value=m["connections_total"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_rejected_connections", "Connections closed as soon as accepted, by reason "
            "(limit: the worker's connection limit; descriptors: out of file descriptors; "
            "shutting_down)", labels=["reason"]), m["rejected_connections"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_tls_handshake_refusals", "TLS handshakes refused or failed, by reason "
            "(unknown_server_name, no_server_name: refused with the unrecognized_name alert; "
            "protocol_version, client_certificate, not_tls, handshake)",
            labels=["listener", "reason"]), m["tls_refusals"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_upstream_overflow", "Tries refused a backend connection at once "
            "(endpoint_limit: connections per endpoint per worker; descriptors; a circuit "
            "breaker's max_connections, max_pending_requests, max_requests, max_retries)",
            labels=["backend", "reason"]), m["upstream_overflows"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_outlier_ejections", "Endpoints ejected by outlier detection",
            labels=["backend"]), m["outlier_ejections"])
        yield CounterMetricFamily("kgw_l7_http2_connections",
                                  "Client connections served as HTTP/2",
                                  value=m["http2_connections"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_http2_errors", "HTTP/2 client connections (GOAWAY) and streams (reset, "
            "or refused with a status) ended for breaking the protocol or abusing it, by "
            "reason (rapid_reset, ping_flood, hpack_bomb, malformed_*...)",
            labels=["reason"]), m["http2_errors"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_rate_limited", "Requests a local rate limit (TrafficPolicy "
            "rateLimit.local) answered 429, by route and policy",
            labels=["route", "policy"]), m["rate_limited"])
        yield CounterMetricFamily(
            "kgw_l7_rate_limit_table_full", "Requests let through unlimited because the "
            "node's rate limit table had no slot for their key",
            value=m["rate_limit_table_full"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_http2_stream_resets", "RST_STREAM frames received from HTTP/2 clients "
            "(peer=client) and from HTTP/2 backends on streams a request waited on "
            "(peer=backend), by error code (cancel, refused_stream, internal_error...)",
            labels=["peer", "code"]), m["http2_resets"])
        dropped = CounterMetricFamily(
            "kgw_access_log_dropped", "Access log lines lost (buffer_full: the writer could "
            "not keep up with a slow disk or a blocked pipe; write_error: a write failed)",
            labels=["reason"])
        for reason in ("buffer_full", "write_error"):
            dropped.add_metric([reason], m["access_log_dropped"].get(reason, 0))
        yield dropped
        yield CounterMetricFamily("kgw_access_log_write_errors",
                                  "Failed access log writes (each loses its batch of lines)",
                                  value=m["access_log_write_errors"])
        spans = CounterMetricFamily(
            "kgw_tracing_spans_dropped", "Trace spans not exported (queue_full: the export "
            "queue was full; export_failed: the collector refused them, failed or did not "
            "answer in time)", labels=["reason"])
        for reason in ("queue_full", "export_failed"):
            spans.add_metric([reason], m["tracing_spans_dropped"].get(reason, 0))
        yield spans
        yield CounterMetricFamily("kgw_tracing_spans_exported",
                                  "Trace spans the collector accepted",
                                  value=m["tracing_spans_exported"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_global_ratelimit_decisions", "Requests checked against a global rate "
            "limit (Redis), by limit and outcome (allowed, limited; fail_open, fail_closed: "
            "Redis failed or was in its backoff, and the limit's failureMode decided)",
            labels=["limit", "outcome"]), m["global_ratelimit_decisions"])
        yield _filled(CounterMetricFamily(
            "kgw_l7_global_ratelimit_redis_errors", "Failed global rate limit calls to Redis, "
            "by address and reason (timeout, refused, closed, unresolvable, error; busy: the "
            "worker's connection had too many checks waiting)",
            labels=["address", "reason"]), m["global_ratelimit_errors"])
        yield CounterMetricFamily("kgw_l7_global_ratelimit_redis_round_trips",
                                  "Round trips to Redis for global rate limits (one per "
                                  "checked request; two after Redis lost its script cache)",
                                  value=m["global_ratelimit_round_trips"])
        gens = m["generations"]
        yield GaugeMetricFamily("kgw_l7_config_generation",
                                "Config generation every worker serves (the oldest)",
                                value=min(gens) if gens else 0)
        yield GaugeMetricFamily("kgw_l7_workers", "Running L7 worker processes",
                                value=m["workers"])
        yield CounterMetricFamily("kgw_l7_worker_restarts",
                                  "L7 workers restarted after they exited unexpectedly",
                                  value=m["worker_restarts"])
