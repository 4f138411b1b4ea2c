"""Apply L4Config to the BPF maps as diffs.

The programmer keeps what it last wrote (frontend ids, backend ids, each frontend's
Maglev row) and on every apply writes only what changed: new backends first, then the
Maglev slots that differ, then new frontend keys; removals last. A backend whose
weight drops to 0 loses its Maglev slots (no new flows) but its connection-table
entries hold the full rewrite, so its established flows carry on.

On restart ``adopt()`` reads the ids and rows back from the pinned maps, so the first
apply of a restarted agent writes nothing when the config did not change.

``refresh_node()`` rewrites what depends on the node rather than the configuration (each
backend's SNAT source, the local addresses) after the node's routes or addresses changed.
``check()`` reads the maps back and compares them with what was written: anything else
changed them (another process on the same pins, a hand-run bpftool), and it is rewritten
and reported.
"""

from __future__ import annotations

import ipaddress
import logging
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from . import abi, maglev
from .config import Endpoint, Frontend, L4Config
from .maps import MapSet

log = logging.getLogger("kgw.l4.programmer")

FeIdent = tuple[str, int, str]  # (address, port, protocol)
BeIdent = tuple[str, int]  # (address, port)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    frontends_added: int = 0
    frontends_removed: int = 0
    backends_written: int = 0
    slots_written: int = 0
    errors: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Drift:
    """What ``check()`` found different from what the programmer wrote."""

    #: map name -> entries that differed (and were rewritten, or deleted when unexpected)
    entries: Mapping[str, int] = field(default_factory=dict)
    #: frontends whose forwarding those entries affect
    frontends: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.entries.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def describe(self) -> str:
        return ", ".join(f"{n} {name}" for name, n in sorted(self.entries.items()))


@dataclass(frozen=True, slots=True)
class FrontendView:
    """What is programmed for one frontend (for status and kgw-inspect)."""

    name: str
    address: str
    port: int
    protocol: str
    fe_id: int
    #: (backend_id, "addr:port", weight) for every endpoint, weight 0 included
    endpoints: tuple[tuple[int, str, int], ...]


def _valid_ipv4(s: str) -> bool:
    try:
        ipaddress.IPv4Address(s)
        return True
    except ValueError:
        return False


class Programmer:
    def __init__(self, maps: MapSet, *, snat_for: Callable[[str], str],
                 local_addrs: Callable[[], Iterable[str]] = lambda: (),
                 sizes: Mapping[str, int] = abi.SIZES):
        self.maps = maps
        self.snat_for = snat_for
        self.local_addrs = local_addrs
        self.max_fe = sizes["KGW_MAX_FRONTENDS"]
        self.max_be = sizes["KGW_MAX_BACKENDS"]
        self.ring_size = sizes["KGW_MAGLEV_SIZE"]
        self.fe_ids: dict[FeIdent, int] = {}
        self.be_ids: dict[BeIdent, int] = {}
        self.be_entries: dict[int, bytes] = {}  # backend_id -> value last written
        self.free_be: set[int] = set()  # ids written before, not referenced now
        self.rings: dict[int, list[int]] = {}  # fe_id -> backend ids per slot
        self.local: set[str] = set()
        self.views: dict[str, FrontendView] = {}
        self.errors: dict[str, str] = {}
        self._config_errors: dict[str, str] = {}  # from the configuration itself
        self._source_errors: dict[BeIdent, str] = {}  # backends without a SNAT source
        self._fe_endpoints: dict[str, set[BeIdent]] = {}  # frontend -> its endpoints
        self._row_cursor = 0  # where check() goes on reading Maglev rows

    # ------------------------------------------------------------------ adoption

    def adopt(self) -> int:
        """Read ids and Maglev rows from the maps. Returns the number of frontends."""
        fem = self.maps.get("kgw_frontends")
        for k in fem.keys():
            v = fem.lookup(k)
            if v is None:
                continue
            key, val = abi.FeKey.from_buffer_copy(k), abi.FeVal.from_buffer_copy(v)
            ident = (abi.ip_str(key.addr), abi.port_host(key.port), abi.PROTO_NAME.get(key.proto, "?"))
            self.fe_ids[ident] = val.fe_id
        bem = self.maps.get("kgw_backends")
        vsz = bem.info.value_size
        table = bem.lookup_range(0, self.max_be)  # batched reads: a copy, not a syscall each
        for bid in range(self.max_be):
            raw = table[bid * vsz:(bid + 1) * vsz]
            be = abi.Backend.from_buffer_copy(raw)
            if be.addr == 0:
                continue
            self.be_ids[(abi.ip_str(be.addr), abi.port_host(be.port))] = bid
            self.be_entries[bid] = raw
        ring = self.maps.get("kgw_maglev")
        n = self.ring_size
        for fe_id in self.fe_ids.values():
            self.rings[fe_id] = list(struct.unpack(f"<{n}I", ring.lookup_range(fe_id * n, n)))
        lam = self.maps.get("kgw_local_addrs")
        self.local = {abi.ip_str(int.from_bytes(k, "little")) for k in lam.keys()}
        log.info("adopted %d frontends and %d backends from pinned maps",
                 len(self.fe_ids), len(self.be_ids))
        return len(self.fe_ids)

    # ------------------------------------------------------------------ validation

    def _validate(self, config: L4Config) -> tuple[list[Frontend], dict[str, str]]:
        errors: dict[str, str] = {}
        ok: list[Frontend] = []
        seen: dict[FeIdent, str] = {}
        for fe in config.frontends:
            if fe.protocol not in abi.PROTO:
                errors[fe.name] = f"protocol {fe.protocol!r} is not TCP or UDP"
                continue
            if not _valid_ipv4(fe.address):
                errors[fe.name] = f"address {fe.address!r} is not an IPv4 address"
                continue
            if not 1 <= fe.port <= 65535:
                errors[fe.name] = f"port {fe.port} is out of range 1-65535"
                continue
            ident = (fe.address, fe.port, fe.protocol)
            if ident in seen:
                errors[fe.name] = (f"port clash: {fe.address}:{fe.port}/{fe.protocol} "
                                   f"is already used by frontend {seen[ident]!r}")
                continue
            seen[ident] = fe.name
            ok.append(fe)
        if len(ok) > self.max_fe:
            for fe in ok[self.max_fe:]:
                errors[fe.name] = f"too many frontends (the kernel table holds {self.max_fe})"
            ok = ok[:self.max_fe]
        return ok, errors

    @staticmethod
    def _endpoints(fe: Frontend, errors: dict[str, str]) -> dict[BeIdent, int]:
        """Valid endpoints of a frontend with their integer weights (groups' weights
        shared equally among their endpoints; duplicates add up)."""
        groups: list[tuple[int, list[Endpoint]]] = []
        bad: list[str] = []
        for g in fe.backends:
            eps = []
            for ep in g.endpoints:
                if _valid_ipv4(ep.address) and 1 <= ep.port <= 65535 and ep.address != "0.0.0.0":
                    eps.append(ep)
                else:
                    bad.append(f"{ep.address}:{ep.port}")
            if g.weight < 0:
                bad.append(f"group {g.name} has negative weight {g.weight}")
                continue
            groups.append((g.weight, eps))
        weights = maglev.group_weights([(w, len(eps)) for w, eps in groups])
        out: dict[BeIdent, int] = {}
        for (_, eps), w in zip(groups, weights):
            for ep in eps:
                out[(ep.address, ep.port)] = out.get((ep.address, ep.port), 0) + w
        if bad:
            errors[fe.name] = "invalid endpoints ignored: " + ", ".join(bad)
        if not out:
            errors[fe.name] = "no backends"
        elif not any(out.values()):
            errors[fe.name] = "no backend with weight > 0: new connections are refused"
        return out

    # ------------------------------------------------------------------ apply

    def apply(self, config: L4Config) -> ApplyResult:
        fes, errors = self._validate(config)
        wanted: dict[FeIdent, tuple[Frontend, dict[BeIdent, int]]] = {}
        for fe in fes:
            wanted[(fe.address, fe.port, fe.protocol)] = (fe, self._endpoints(fe, errors))

        # 1. backends: every endpoint of every frontend gets an id (weight 0 included,
        #    so that counters keep following a drained backend).
        needed = {ep for _, eps in wanted.values() for ep in eps}
        source_errors: dict[BeIdent, str] = {}
        bem = self.maps.get("kgw_backends")
        stats = self.maps.get("kgw_stats")
        backends_written = 0
        for ep in sorted(needed):
            bid = self.be_ids.get(ep)
            fresh = bid is None
            if fresh:
                used = set(self.be_ids.values())
                candidates = (i for i in range(self.max_be) if i not in used)
                bid = next(candidates, None)
                if bid is None:
                    for ident, (fe, eps) in wanted.items():
                        if ep in eps:
                            errors[fe.name] = f"too many backends (the kernel table holds {self.max_be})"
                    continue
                self.be_ids[ep] = bid
            value = self._backend_value(ep, source_errors)
            if self.be_entries.get(bid) != value:
                if fresh:  # a reused id starts with fresh counters
                    stats.update((abi.backend_base({"KGW_MAX_FRONTENDS": self.max_fe}) + bid)
                                 .to_bytes(4, "little"), bytes(abi.CounterVal()))
                bem.update(bid.to_bytes(4, "little"), value)
                self.be_entries[bid] = value
                backends_written += 1
            self.free_be.discard(bid)
        for ep in list(self.be_ids):
            if ep not in needed:
                self.free_be.add(self.be_ids.pop(ep))

        # 2. Maglev rows, then frontend keys.
        fem = self.maps.get("kgw_frontends")
        ring = self.maps.get("kgw_maglev")
        slots_written = added = removed = 0
        views: dict[str, FrontendView] = {}
        for ident, (fe, eps) in wanted.items():
            live = {ep: w for ep, w in eps.items() if w > 0 and ep in self.be_ids}
            if not live:
                continue  # not installed: the stack refuses new connections
            fe_id = self.fe_ids.get(ident)
            if fe_id is None:
                used = set(self.fe_ids.values())
                fe_id = next(i for i in range(self.max_fe) if i not in used)
                self.fe_ids[ident] = fe_id
            order = sorted(live)
            table = maglev.build_table(
                [maglev.WeightedEndpoint(f"{a}:{p}", live[(a, p)]) for a, p in order],
                self.ring_size)
            new_row = [self.be_ids[order[i]] if i >= 0 else abi.NO_BACKEND for i in table]
            old_row = self.rings.get(fe_id)
            base = fe_id * self.ring_size
            changes = (maglev.changed_slots(old_row, new_row) if old_row is not None
                       else list(enumerate(new_row)))
            ring.update_many([((base + slot).to_bytes(4, "little"), bid.to_bytes(4, "little"))
                              for slot, bid in changes])
            slots_written += len(changes)
            self.rings[fe_id] = new_row
            key = bytes(abi.FeKey(addr=abi.ip_be(fe.address), port=abi.port_be(fe.port),
                                  proto=abi.PROTO[fe.protocol]))
            val = bytes(abi.FeVal(fe_id=fe_id))
            if fem.lookup(key) != val:
                fem.update(key, val)
                added += 1
            views[fe.name] = FrontendView(
                fe.name, fe.address, fe.port, fe.protocol, fe_id,
                tuple((self.be_ids[ep], f"{ep[0]}:{ep[1]}", w) for ep, w in sorted(eps.items())
                      if ep in self.be_ids))

        installed = {(v.address, v.port, v.protocol) for v in views.values()}
        for ident in list(self.fe_ids):
            if ident not in installed:
                addr, port, proto = ident
                key = bytes(abi.FeKey(addr=abi.ip_be(addr), port=abi.port_be(port),
                                      proto=abi.PROTO.get(proto, 0)))
                fem.delete(key)
                del self.fe_ids[ident]
                removed += 1

        # 3. local addresses (for frontends on 0.0.0.0)
        self._write_local()

        self.views = views
        self._config_errors = errors
        self._source_errors = source_errors
        self._fe_endpoints = {fe.name: set(eps) for fe, eps in wanted.values()}
        self.errors = self._merged_errors()
        for name, err in self.errors.items():
            log.warning("frontend %s: %s", name, err)
        return ApplyResult(added, removed, backends_written, slots_written, dict(self.errors))

    def _backend_value(self, ep: BeIdent, source_errors: dict[BeIdent, str]) -> bytes:
        """The kgw_backends entry of an endpoint; a backend without a SNAT source is
        written with 0.0.0.0 and its frontends report why."""
        try:
            snat = self.snat_for(ep[0])
        except Exception as e:  # noqa: BLE001 — a routing failure is a config error
            source_errors[ep] = f"backend {ep[0]}: {e}"
            snat = "0.0.0.0"
        return bytes(abi.Backend(addr=abi.ip_be(ep[0]), snat_addr=abi.ip_be(snat), port=abi.port_be(ep[1])))

    def _merged_errors(self) -> dict[str, str]:
        out = dict(self._config_errors)
        for name, eps in self._fe_endpoints.items():
            msgs = sorted({self._source_errors[ep] for ep in eps if ep in self._source_errors})
            if msgs:
                more = f"; and {len(msgs) - 3} more backends" if len(msgs) > 3 else ""
                out[name] = "; ".join(([out[name]] if name in out else []) + msgs[:3]) + more
        return out

    def _write_local(self) -> int:
        """Bring kgw_local_addrs to the node's addresses; returns entries changed."""
        lam = self.maps.get("kgw_local_addrs")
        local = {a for a in self.local_addrs() if _valid_ipv4(a)}
        for a in local - self.local:
            lam.update(abi.ip_be(a).to_bytes(4, "little"), (1).to_bytes(4, "little"))
        for a in self.local - local:
            lam.delete(abi.ip_be(a).to_bytes(4, "little"))
        changed = len(local ^ self.local)
        self.local = local
        return changed

    # ------------------------------------------------------------------ node changes

    def refresh_node(self) -> int:
        """After a route or address change: rewrite the backend entries whose SNAT source
        changed and the local addresses. Returns the number of entries rewritten; the
        frontends' errors follow (a backend that lost its route is reported)."""
        bem = self.maps.get("kgw_backends")
        source_errors: dict[BeIdent, str] = {}
        written = 0
        for ep, bid in sorted(self.be_ids.items()):
            value = self._backend_value(ep, source_errors)
            if self.be_entries.get(bid) != value:
                bem.update(bid.to_bytes(4, "little"), value)
                self.be_entries[bid] = value
                written += 1
        self._source_errors = source_errors
        self.errors = self._merged_errors()
        return written + self._write_local()

    # ------------------------------------------------------------------ drift

    def _fe_key(self, ident: FeIdent) -> bytes:
        addr, port, proto = ident
        return bytes(abi.FeKey(addr=abi.ip_be(addr), port=abi.port_be(port), proto=abi.PROTO.get(proto, 0)))

    def check(self, repair: bool = True, max_rows: int | None = None) -> Drift:
        """Read back every entry this programmer wrote (frontend keys, the backends they
        use, their Maglev rows, the local addresses) and compare. What differs is
        rewritten (``repair``), what should not be there deleted, and reported.

        Cost: one syscall per frontend key and local address, one batched read of
        kgw_backends and one per Maglev row (KGW_MAGLEV_SIZE * 4 bytes, ~1.7 ms each),
        then a bytes comparison; Python loops only over a row or table that differs.
        ``max_rows`` bounds the Maglev rows read per call: the next call goes on where
        this one stopped, so every row is read within ceil(frontends / max_rows) calls."""
        counts: Counter[str] = Counter()
        affected: set[str] = set()
        by_ident = {(v.address, v.port, v.protocol): v for v in self.views.values()}

        fem = self.maps.get("kgw_frontends")
        want = {self._fe_key(ident): (ident, bytes(abi.FeVal(fe_id=fid))) for ident, fid in self.fe_ids.items()}
        have = {k: fem.lookup(k) for k in fem.keys()}
        for key, (ident, val) in want.items():
            if have.get(key) != val:
                counts["kgw_frontends"] += 1
                if ident in by_ident:
                    affected.add(by_ident[ident].name)
                if repair:
                    fem.update(key, val)
        for key in have.keys() - want.keys():
            counts["kgw_frontends"] += 1
            if repair:
                fem.delete(key)

        bem = self.maps.get("kgw_backends")
        vsz = bem.info.value_size
        table = bem.lookup_range(0, self.max_be)
        wrong_be = {bid for bid in set(self.be_ids.values())
                    if table[bid * vsz:(bid + 1) * vsz] != self.be_entries.get(bid)}
        for bid in sorted(wrong_be):
            counts["kgw_backends"] += 1
            if repair:
                bem.update(bid.to_bytes(4, "little"), self.be_entries[bid])
        if wrong_be:
            affected.update(v.name for v in self.views.values() if any(b in wrong_be for b, _, _ in v.endpoints))

        ring = self.maps.get("kgw_maglev")
        n = self.ring_size
        views = sorted(self.views.values(), key=lambda v: v.fe_id)
        if max_rows is not None and len(views) > max_rows:
            start = self._row_cursor % len(views)
            views = (views + views)[start:start + max_rows]
            self._row_cursor = start + max_rows
        for v in views:
            row = self.rings.get(v.fe_id)
            if row is None:
                continue
            got = ring.lookup_range(v.fe_id * n, n)
            expected = struct.pack(f"<{n}I", *row)
            if got == expected:
                continue
            have_row = struct.unpack(f"<{n}I", got)
            diff = [(slot, bid) for slot, (bid, old) in enumerate(zip(row, have_row)) if bid != old]
            counts["kgw_maglev"] += len(diff)
            affected.add(v.name)
            if repair:
                base = v.fe_id * n
                ring.update_many([((base + slot).to_bytes(4, "little"), bid.to_bytes(4, "little"))
                                  for slot, bid in diff])

        lam = self.maps.get("kgw_local_addrs")
        want_local = {abi.ip_be(a).to_bytes(4, "little") for a in self.local}
        have_local = {k: lam.lookup(k) for k in lam.keys()}
        one = (1).to_bytes(4, "little")
        wrong_local = [k for k in want_local if have_local.get(k) != one]
        extra_local = [k for k in have_local if k not in want_local]
        if wrong_local or extra_local:
            counts["kgw_local_addrs"] += len(wrong_local) + len(extra_local)
            affected.update(v.name for v in self.views.values() if v.address == "0.0.0.0")
            if repair:
                for k in wrong_local:
                    lam.update(k, one)
                for k in extra_local:
                    lam.delete(k)
        return Drift(dict(counts), tuple(sorted(affected)))
