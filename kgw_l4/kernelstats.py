"""The kernel plane's counters as ``metrics.L4Stats``: read at scrape time from the per-CPU
BPF counters (``loader.stats``), labelled from the configuration the programmer wrote.

The BPF programs count per frontend id and backend id (bpf/kgw_consts.h); what an id
stands for — the Gateway, listener and route of a frontend, the backendRefs of an
endpoint — is the userspace side's knowledge: the programmer's views (id -> address)
and the L4Config they were written from (address -> names).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import abi, loader as ld
from .config import L4Config
from .maps import MapSet
from .metrics import BackendStats, FrontendStats, L4Stats, endpoint_groups
from .programmer import FrontendView

#: global counters that are drops, and the reason each is reported as
DROP_REASONS: dict[abi.Counter, str] = {
    **{c: c.name.removeprefix("DROP_").lower() for c in abi.Counter if c.name.startswith("DROP_")},
    abi.Counter.SPLICE_DROP: "splice_no_peer",
    abi.Counter.SPLICE_OVERFLOW: "splice_overflow",
}


def kernel_stats(mode: str, maps: MapSet, views: Iterable[FrontendView], config: L4Config,
                 sizes: Mapping[str, int], sweep: ld.Sweep | None = None,
                 tables: Mapping[str, tuple[int, int]] | None = None) -> L4Stats:
    """``views``: what the programmer wrote (frontend ids, backend ids); ``sweep``: the
    last connection-table sweep (active flows, the tables' fill), if any yet."""
    views = list(views)
    by_name = {fe.name: fe for fe in config.frontends}
    endpoints: dict[int, str] = {bid: ep for v in views for bid, ep, _ in v.endpoints}
    st = ld.stats(maps, (v.fe_id for v in views), endpoints, sizes)
    fes = []
    for v in views:
        c = st.frontends[v.fe_id]
        fe = by_name.get(v.name)
        fes.append(FrontendStats(
            frontend=f"{v.address}:{v.port}/{v.protocol}",
            gateway=fe.gateway if fe else "", listener=fe.listener if fe else "",
            route=fe.route if fe else "",
            bytes=(c.to_backend[1], c.to_client[1]), packets=(c.to_backend[0], c.to_client[0]),
            flows=c.flows, active=sweep.flows.get(v.fe_id, 0) if sweep is not None else None,
            drops={DROP_REASONS[abi.Counter[name]]: p for name, (p, _) in c.drops.items() if p}))
    groups = endpoint_groups(config.frontends)
    bes = []
    for bid, ep in sorted(endpoints.items()):
        bc = st.backends[bid]
        bes.append(BackendStats(ep, ",".join(sorted(groups.get(ep, ()))),
                                bytes=(bc.to_backend[1], bc.to_client[1]),
                                packets=(bc.to_backend[0], bc.to_client[0]), flows=bc.flows))
    drops = {DROP_REASONS[abi.Counter[n]]: p for n, (p, _) in st.counters.items()
             if abi.Counter[n] in DROP_REASONS}
    events = {n.lower(): p for n, (p, _) in st.counters.items()
              if abi.Counter[n] not in DROP_REASONS}
    all_tables = dict(tables or {})
    if sweep is not None:
        for t, n in sweep.entries.items():
            all_tables[t] = (n, sizes["KGW_CT_SIZE" if t == "kgw_ct" else "KGW_CT_SYN_SIZE"])
    return L4Stats(mode, tuple(fes), tuple(bes), drops, events, all_tables)
