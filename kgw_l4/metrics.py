"""The L4 plane's Prometheus families: the same names and labels in every mode.

Each mode reads its own counters into one ``L4Stats`` record at scrape time: the kernel
plane from the per-CPU BPF counters (``loader.stats``, six batched reads) and its last
connection-table sweep, the userspace plane from the counters its proxies keep
(``Tally``). ``render`` turns that record into the exposition, with prometheus_client's
metric families (as kgw_l7.metrics does), so the text format is the library's. The same
record, as a dict, is what the admin API's ``/l4`` page serves and ``kgw-inspect`` shows
in userspace mode.

What a mode cannot count is left out rather than reported as 0: a stream proxy (TCP in
userspace, TLS passthrough) has no packets, nor does splice mode; a TLS passthrough
connection the kernel splices has no bytes per route (``bytes`` None).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

#: label values of the ``direction`` label, in the order of every (to backend, to client)
#: pair below
DIRECTIONS = ("to_backend", "to_client")
FRONTEND_LABELS = ["gateway", "listener", "route", "frontend"]
BACKEND_LABELS = ["backend", "endpoint"]


@dataclass(frozen=True, slots=True)
class FrontendStats:
    """One frontend's counters (one route's, for TLS passthrough: a port serves several)."""

    frontend: str  # "address:port/PROTOCOL"
    gateway: str = ""  # "ns/name"
    listener: str = ""
    route: str = ""  # "ns/name" ("" when no route)
    #: (to backend, to client); None where the mode does not count them
    bytes: tuple[int, int] | None = None
    packets: tuple[int, int] | None = None
    #: flows (connections, UDP client flows) given a backend
    flows: int = 0
    #: flows open now (kernel: at the last connection-table sweep); None: unknown
    active: int | None = None
    #: reason -> packets (kernel, UDP) or connections (TCP, TLS) dropped
    drops: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BackendStats:
    """One backend endpoint's counters (an endpoint several frontends share counts once)."""

    endpoint: str  # "address:port"
    backend: str = ""  # the backendRef groups it belongs to ("ns/service:port", comma-separated)
    bytes: tuple[int, int] | None = None
    packets: tuple[int, int] | None = None
    flows: int = 0


@dataclass(frozen=True, slots=True)
class L4Stats:
    mode: str
    frontends: tuple[FrontendStats, ...] = ()
    backends: tuple[BackendStats, ...] = ()
    #: the whole plane's drops by reason, including those no frontend can be named for
    #: (a malformed packet)
    drops: Mapping[str, int] = field(default_factory=dict)
    #: the kernel's other global counters by name (ct_hit, fwd_tc, splice_redirect, ...)
    events: Mapping[str, int] = field(default_factory=dict)
    #: table -> (entries, capacity)
    tables: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Tally:
    """The mutable counters a userspace path keeps for one frontend or backend endpoint,
    read into FrontendStats/BackendStats at scrape time. Plain attributes: the event loop
    is the only writer, and an increment costs what it costs on any object."""

    __slots__ = ("bytes", "packets", "flows", "active", "drops")

    def __init__(self) -> None:
        self.bytes = [0, 0]
        self.packets = [0, 0]
        self.flows = 0
        self.active = 0
        self.drops: dict[str, int] = {}

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n


def live_view(open_bytes: Iterable[tuple[Tally | None, Tally | None, int, int]]
              ) -> Callable[[Tally], Tally]:
    """``(frontend tally, backend tally, bytes up, bytes down)`` of each open connection
    (read at scrape time: nothing is counted per packet or per read) -> a function giving
    a tally as scraped: its closed connections' bytes plus the open ones' so far."""
    live: dict[int, list[int]] = {}
    for fe, be, up, down in open_bytes:
        for t in (fe, be):
            if t is not None:
                acc = live.setdefault(id(t), [0, 0])
                acc[0] += up
                acc[1] += down

    def plus(t: Tally) -> Tally:
        extra = live.get(id(t))
        if extra is None:
            return t
        out = Tally()
        out.bytes = [t.bytes[0] + extra[0], t.bytes[1] + extra[1]]
        out.flows, out.active, out.drops = t.flows, t.active, t.drops
        return out
    return plus


def endpoint_groups(frontends: Iterable[Any]) -> dict[str, set[str]]:
    """"address:port" -> the backendRef groups ("ns/service:port") listing it, among
    these frontends (kgw_l4.config.Frontend or SNIRoute: anything with ``backends``)."""
    out: dict[str, set[str]] = {}
    for fe in frontends:
        for g in fe.backends:
            for ep in g.endpoints:
                out.setdefault(f"{ep.address}:{ep.port}", set()).add(g.name)
    return out


def sum_drops(frontends: Iterable[FrontendStats],
              extra: Mapping[str, int] | None = None) -> dict[str, int]:
    """The plane-wide drops of a userspace plane: its frontends' (plus ``extra``)."""
    out: dict[str, int] = dict(extra or {})
    for f in frontends:
        for reason, n in f.drops.items():
            out[reason] = out.get(reason, 0) + n
    return out


def render(stats: L4Stats) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats))
    return generate_latest(registry)


def _pairs(values: tuple[int, int] | None) -> Iterator[tuple[str, int]]:
    if values is not None:
        yield from zip(DIRECTIONS, values)


class _Collector:
    def __init__(self, stats: L4Stats) -> None:
        self.s = stats

    def collect(self) -> Iterator[Metric]:
        s = self.s
        yield _mode(s.mode)
        fl = FRONTEND_LABELS
        fb = CounterMetricFamily("kgw_l4_frontend_bytes", "Bytes of a frontend's flows, each way "
                                 "(to_backend: from clients; to_client: from backends)",
                                 labels=[*fl, "direction"], unit="bytes")
        fp = CounterMetricFamily("kgw_l4_frontend_packets",
                                 "Packets of a frontend's flows, each way "
                                 "(kernel modes; UDP datagrams in userspace)",
                                 labels=[*fl, "direction"])
        ff = CounterMetricFamily("kgw_l4_frontend_flows", "Flows (TCP connections, UDP client "
                                 "flows) a frontend gave a backend", labels=fl)
        fa = GaugeMetricFamily("kgw_l4_frontend_active_flows", "Flows open now (kernel modes: at "
                               "the last connection-table sweep, every 5 s)", labels=fl)
        fd = CounterMetricFamily("kgw_l4_frontend_drops", "Packets (kernel modes, UDP) or "
                                 "connections (TCP and TLS in userspace) a frontend dropped, by "
                                 "reason", labels=[*fl, "reason"])
        for f in _merged_frontends(s.frontends):
            labels = [f.gateway, f.listener, f.route, f.frontend]
            for d, n in _pairs(f.bytes):
                fb.add_metric([*labels, d], n)
            for d, n in _pairs(f.packets):
                fp.add_metric([*labels, d], n)
            ff.add_metric(labels, f.flows)
            if f.active is not None:
                fa.add_metric(labels, f.active)
            for reason, n in sorted(f.drops.items()):
                fd.add_metric([*labels, reason], n)
        yield from (fb, fp, ff, fa, fd)
        bb = CounterMetricFamily("kgw_l4_backend_bytes",
                                 "Bytes of a backend endpoint's flows, each "
                                 "way", labels=[*BACKEND_LABELS, "direction"], unit="bytes")
        bp = CounterMetricFamily("kgw_l4_backend_packets", "Packets of a backend endpoint's flows, "
                                 "each way", labels=[*BACKEND_LABELS, "direction"])
        bf = CounterMetricFamily("kgw_l4_backend_flows", "Flows given to a backend endpoint",
                                 labels=BACKEND_LABELS)
        for b in _merged_backends(s.backends):
            labels = [b.backend, b.endpoint]
            for d, n in _pairs(b.bytes):
                bb.add_metric([*labels, d], n)
            for d, n in _pairs(b.packets):
                bp.add_metric([*labels, d], n)
            bf.add_metric(labels, b.flows)
        yield from (bb, bp, bf)
        dr = CounterMetricFamily("kgw_l4_drops", "Everything the L4 plane dropped, by reason "
                                 "(including packets no frontend can be named for)",
                                 labels=["reason"])
        for reason, n in sorted(s.drops.items()):
            dr.add_metric([reason], n)
        yield dr
        if s.events:
            ev = CounterMetricFamily("kgw_l4_datapath_events",
                                     "The kernel programs' other counters "
                                     "(packets or skbs), by name", labels=["event"])
            for name, n in sorted(s.events.items()):
                ev.add_metric([name], n)
            yield ev
        me = GaugeMetricFamily("kgw_l4_map_entries", "Entries in an L4 table (kernel maps; the "
                               "userspace plane's flow tables)", labels=["map"])
        mc = GaugeMetricFamily("kgw_l4_map_capacity", "Entries an L4 table can hold",
                               labels=["map"])
        for name, (entries, capacity) in sorted(s.tables.items()):
            me.add_metric([name], entries)
            mc.add_metric([name], capacity)
        yield from (me, mc)


def _mode(mode: str) -> Metric:
    g = GaugeMetricFamily("kgw_l4_mode", "The L4 data plane's mode: 1 for the one running",
                          labels=["mode"])
    g.add_metric([mode], 1)
    return g


def _merged_frontends(rows: tuple[FrontendStats, ...]) -> list[FrontendStats]:
    """Rows with the same labels summed: one series per label set, as the exposition
    format requires (two binds of one listener differ in ``frontend``; nothing else
    should repeat, but a scrape must not fail if it does)."""
    out: dict[tuple[str, str, str, str], FrontendStats] = {}
    for f in rows:
        key = (f.gateway, f.listener, f.route, f.frontend)
        cur = out.get(key)
        out[key] = f if cur is None else _add(cur, f)
    return [out[k] for k in sorted(out)]


def _merged_backends(rows: tuple[BackendStats, ...]) -> list[BackendStats]:
    """Rows of one endpoint summed (a TCP and a UDP frontend of the userspace plane may
    share an endpoint; each proxy counts its own flows to it)."""
    out: dict[tuple[str, str], BackendStats] = {}
    for b in rows:
        key = (b.endpoint, b.backend)
        cur = out.get(key)
        out[key] = b if cur is None else dataclasses.replace(
            cur, bytes=_pair(cur.bytes, b.bytes), packets=_pair(cur.packets, b.packets),
            flows=cur.flows + b.flows)
    return [out[k] for k in sorted(out)]


def _pair(x: tuple[int, int] | None, y: tuple[int, int] | None) -> tuple[int, int] | None:
    if x is None or y is None:
        return x if y is None else y
    return x[0] + y[0], x[1] + y[1]


def _add(a: FrontendStats, b: FrontendStats) -> FrontendStats:
    pair = _pair
    drops = dict(a.drops)
    for k, v in b.drops.items():
        drops[k] = drops.get(k, 0) + v
    active = None if a.active is None and b.active is None else (a.active or 0) + (b.active or 0)
    return dataclasses.replace(a, bytes=pair(a.bytes, b.bytes), packets=pair(a.packets, b.packets),
                               flows=a.flows + b.flows, active=active, drops=drops)
