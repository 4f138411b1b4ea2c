"""Apply L4Config to the BPF maps as diffs.

The programmer keeps what it last wrote (frontend ids, backend ids, each frontend's
Maglev row) and on every apply writes only what changed: new backends first, then the
Maglev slots that differ, then new frontend keys; removals last. A backend whose
weight drops to 0 loses its Maglev slots (no new flows) but its connection-table
entries hold the full rewrite, so its established flows carry on.

On restart ``adopt()`` reads the ids and rows back from the pinned maps, so the first
apply of a restarted agent writes nothing when the config did not change.

``set_health()`` takes the endpoints that fail their active health check (kgw_l4.health)
and rewrites only their slots (``maglev.without_down``): flows to healthy backends keep
their slots, a recovered endpoint gets its own back. When every endpoint of a frontend is
down, all are kept (panic), and the view says so.

``refresh_node()`` rewrites what depends on the node rather than the configuration (each
backend's SNAT source, the local addresses) after the node's routes or addresses changed.
``check()`` reads the maps back and compares them with what was written: anything else
changed them (another process on the same pins, a hand-run bpftool), and it is rewritten
and reported.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from . import abi, loader as ld, maglev
from .config import ConnectionRateLimit, Endpoint, Frontend, L4Config
from .maps import MapSet

log = logging.getLogger("kgw.l4.programmer")

FeIdent = tuple[str, int, str]  # (address, port, protocol)
BeIdent = tuple[str, int]  # (address, port)
#: an endpoint as health checking knows it: (backend group name, address, port)
HealthKey = tuple[str, str, int]
#: what apply() is asked for: frontend -> (the frontend, its endpoints' weights)
Wanted = dict[FeIdent, tuple[Frontend, dict[BeIdent, int]]]


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
    #: "addr:port" of the endpoints failing their health check (their slots moved, unless
    #: ``panic``)
    down: tuple[str, ...] = ()
    #: every endpoint with weight is down: all are kept in the Maglev row
    panic: bool = False


def _syn_limit_error(lim: ConnectionRateLimit) -> str | None:
    """What is wrong with a connection rate limit, or None."""
    if not _valid_ipv4(lim.address):
        return f"address {lim.address!r} is not an IPv4 address"
    if not 1 <= lim.port <= 65535:
        return f"port {lim.port} is out of range 1-65535"
    if not lim.per_second > 0 or lim.per_second > 1e9:
        return f"connection rate {lim.per_second} per second is not in (0, 1e9]"
    if lim.burst < 1:
        return f"burst {lim.burst} is less than 1"
    return None


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
        self.sizes = sizes
        self.max_fe = sizes["KGW_MAX_FRONTENDS"]
        self.max_be = sizes["KGW_MAX_BACKENDS"]
        self.ring_size = sizes["KGW_MAGLEV_SIZE"]
        self.layout = abi.StatsLayout(sizes)
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
        #: (address, port) -> (limit id, kgw_syn_limits value last written)
        self.syn_limits: dict[BeIdent, tuple[int, bytes]] = {}
        #: endpoints failing their health check (set_health)
        self.down: frozenset[HealthKey] = frozenset()
        self._wanted_last: Wanted = {}

    # ------------------------------------------------------------------ adoption

    def adopt(self) -> int:
        """Read ids and Maglev rows from the maps. Returns the number of frontends."""
        for addr, port, proto, fe_id in ld.frontends(self.maps):
            self.fe_ids[(addr, port, proto)] = fe_id
        for bid, raw in ld.backend_entries(self.maps, self.sizes).items():
            addr, port, _ = abi.backend_of(raw)
            self.be_ids[(addr, port)] = bid
            self.be_entries[bid] = raw
        for fe_id in self.fe_ids.values():
            self.rings[fe_id] = ld.maglev_row(self.maps, fe_id, self.sizes)
        self.local = ld.local_addrs(self.maps)
        for key, val in self._syn_map().items():
            addr, port, _, _, lid = abi.syn_limit_of(key, val)
            self.syn_limits[(addr, port)] = (lid, val)
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
        """Bring the maps to ``config`` in three steps: backends (ids and entries), then
        frontends (Maglev rows, then keys; removals last), then the record of what is
        programmed and what is wrong with it (views, errors) that status, ``check()`` and
        ``refresh_node()`` work from. The local addresses follow the node."""
        wanted, errors = self._wanted(config)
        source_errors: dict[BeIdent, str] = {}
        backends_written = self._assign_backends(wanted, errors, source_errors)
        views, slots_written, added, removed = self._install_frontends(wanted)
        self._write_local()
        self._write_syn_limits(config.connection_limits, errors)
        self._record(views, wanted, errors, source_errors)
        return ApplyResult(added, removed, backends_written, slots_written, dict(self.errors))

    def _wanted(self, config: L4Config) -> tuple[Wanted, dict[str, str]]:
        """The valid frontends with their endpoints' weights, and what is wrong."""
        fes, errors = self._validate(config)
        wanted: Wanted = {}
        for fe in fes:
            wanted[(fe.address, fe.port, fe.protocol)] = (fe, self._endpoints(fe, errors))
        return wanted, errors

    def _assign_backends(self, wanted: Wanted, errors: dict[str, str],
                         source_errors: dict[BeIdent, str]) -> int:
        """Give every endpoint of every wanted frontend a backend id (weight 0 included,
        so that counters keep following a drained backend) and write its kgw_backends
        entry where it changed; ids no endpoint uses any more are freed. Returns the
        entries written."""
        needed = {ep for _, eps in wanted.values() for ep in eps}
        written = 0
        for ep in sorted(needed):
            bid = self.be_ids.get(ep)
            fresh = bid is None
            if fresh:
                used = set(self.be_ids.values())
                bid = next((i for i in range(self.max_be) if i not in used), None)
                if bid is None:
                    for fe, eps in wanted.values():
                        if ep in eps:
                            errors[fe.name] = ("too many backends "
                                               f"(the kernel table holds {self.max_be})")
                    continue
                self.be_ids[ep] = bid
            assert bid is not None
            written += self._write_backend(bid, self._backend_value(ep, source_errors),
                                           fresh_counters=fresh)
            self.free_be.discard(bid)
        for ep in list(self.be_ids):
            if ep not in needed:
                self.free_be.add(self.be_ids.pop(ep))
        return written

    def _install_frontends(self, wanted: Wanted) -> tuple[dict[str, FrontendView], int, int, int]:
        """Maglev row, then key, of every wanted frontend with a live backend (one without
        is not installed: the stack refuses new connections); then every other frontend
        key is deleted. Returns (views, slots written, keys added, keys removed)."""
        fem = self.maps.get("kgw_frontends")
        slots_written = added = removed = 0
        views: dict[str, FrontendView] = {}
        for ident, (fe, eps) in wanted.items():
            live = {ep: w for ep, w in eps.items() if w > 0 and ep in self.be_ids}
            if not live:
                continue
            fe_id = self.fe_ids.get(ident)
            if fe_id is None:
                used = set(self.fe_ids.values())
                fe_id = next(i for i in range(self.max_fe) if i not in used)
                self.fe_ids[ident] = fe_id
                self._zero_counters(self.layout.frontend_slots(fe_id))
            views[fe.name], written = self._program_row(fe, eps, fe_id, live)
            slots_written += written
            key, val = abi.fe_key(*ident), abi.fe_val(fe_id)
            if fem.lookup(key) != val:
                fem.update(key, val)
                added += 1
        installed = {(v.address, v.port, v.protocol) for v in views.values()}
        self._wanted_last = wanted
        for ident in list(self.fe_ids):
            if ident not in installed:
                fem.delete(abi.fe_key(*ident))
                del self.fe_ids[ident]
                removed += 1
        return views, slots_written, added, removed

    def _record(self, views: dict[str, FrontendView], wanted: Wanted, errors: dict[str, str],
                source_errors: dict[BeIdent, str]) -> None:
        """Keep what was programmed and why anything was not (status reads it; check()
        compares the maps with it; refresh_node() recomputes the SNAT part)."""
        self.views = views
        self._config_errors = errors
        self._source_errors = source_errors
        self._fe_endpoints = {fe.name: set(eps) for fe, eps in wanted.values()}
        self.errors = self._merged_errors()
        for name, err in self.errors.items():
            log.warning("frontend %s: %s", name, err)

    # ------------------------------------------------------------------ writes

    def _write_backend(self, bid: int, value: bytes, fresh_counters: bool = False) -> bool:
        """Write a kgw_backends entry unless it already holds ``value``; True if written.
        ``fresh_counters``: the id is new to this endpoint, its counters start at 0."""
        if self.be_entries.get(bid) == value:
            return False
        if fresh_counters:
            self._zero_counters(self.layout.backend_slots(bid))
        self.maps.get("kgw_backends").update(abi.u32(bid), value)
        self.be_entries[bid] = value
        return True

    def _zero_counters(self, slots: list[int]) -> None:
        """A new frontend's or backend's counters start at 0, not at what the id's last
        holder counted (its metrics would otherwise start with someone else's traffic)."""
        zero = bytes(abi.CounterVal())
        self.maps.get("kgw_stats").update_many([(abi.u32(i), zero) for i in slots])

    def _down_of(self, fe: Frontend) -> set[BeIdent]:
        """The endpoints of ``fe`` whose group's health check finds them down (a group of
        the same name without a check, through another listener, takes no verdict)."""
        if not self.down:
            return set()
        return {(ep.address, ep.port) for g in fe.backends if g.health_check is not None
                for ep in g.endpoints if (g.name, ep.address, ep.port) in self.down}

    def _program_row(self, fe: Frontend, eps: dict[BeIdent, int], fe_id: int,
                     live: dict[BeIdent, int]) -> tuple[FrontendView, int]:
        """Write a frontend's Maglev row (health included); its view and slots written."""
        down = self._down_of(fe) & live.keys()
        written, panic = self._write_row(fe_id, live, down)
        if panic and not (self.views.get(fe.name) or FrontendView("", "", 0, "", 0, ())).panic:
            log.warning("frontend %s: every endpoint fails its health check: all are kept "
                        "(panic)", fe.name)
        view = FrontendView(
            fe.name, fe.address, fe.port, fe.protocol, fe_id,
            tuple((self.be_ids[ep], f"{ep[0]}:{ep[1]}", w) for ep, w in sorted(eps.items())
                  if ep in self.be_ids),
            tuple(f"{a}:{p}" for a, p in sorted(down)), panic)
        return view, written

    def _write_row(self, fe_id: int, live: dict[BeIdent, int],
                   down: set[BeIdent] | frozenset[BeIdent] = frozenset()) -> tuple[int, bool]:
        """Build a frontend's Maglev row from its live backends (the ``down`` ones' slots
        given to the others) and write the slots that differ from the row last written
        (all of them for a new frontend). Returns (slots written, panic)."""
        order = sorted(live)
        table, panic = maglev.without_down(
            [maglev.WeightedEndpoint(f"{a}:{p}", live[(a, p)]) for a, p in order],
            [i for i, ep in enumerate(order) if ep in down], self.ring_size)
        new_row = [self.be_ids[order[i]] if i >= 0 else abi.NO_BACKEND for i in table]
        old_row = self.rings.get(fe_id)
        changes = (maglev.changed_slots(old_row, new_row) if old_row is not None
                   else list(enumerate(new_row)))
        self._write_slots(fe_id, changes)
        self.rings[fe_id] = new_row
        return len(changes), panic

    def set_health(self, down: frozenset[HealthKey]) -> int:
        """The endpoints failing their health check are now ``down``: rewrite the Maglev
        slots that this moves (only theirs, or theirs given back). Returns slots written."""
        if down == self.down:
            return 0
        self.down = down
        written = 0
        for ident, (fe, eps) in self._wanted_last.items():
            fe_id = self.fe_ids.get(ident)
            if fe_id is None or fe.name not in self.views:
                continue
            live = {ep: w for ep, w in eps.items() if w > 0 and ep in self.be_ids}
            if not live:
                continue
            self.views[fe.name], n = self._program_row(fe, eps, fe_id, live)
            written += n
        return written

    def _write_slots(self, fe_id: int, changes: list[tuple[int, int]]) -> None:
        """(slot, backend id) pairs of one frontend's Maglev row, in batches."""
        base = abi.maglev_index(fe_id, 0, self.ring_size)
        u32 = abi.u32
        self.maps.get("kgw_maglev").update_many(
            [(u32(base + slot), u32(bid)) for slot, bid in changes])

    def _backend_value(self, ep: BeIdent, source_errors: dict[BeIdent, str]) -> bytes:
        """The kgw_backends entry of an endpoint; a backend without a SNAT source is
        written with 0.0.0.0 and its frontends report why."""
        try:
            snat = self.snat_for(ep[0])
        except Exception as e:  # noqa: BLE001 — a routing failure is a config error
            source_errors[ep] = f"backend {ep[0]}: {e}"
            snat = "0.0.0.0"
        return abi.backend_val(ep[0], ep[1], snat)

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
            lam.update(abi.local_addr_key(a), abi.LOCAL_ADDR_PRESENT)
        for a in self.local - local:
            lam.delete(abi.local_addr_key(a))
        changed = len(local ^ self.local)
        self.local = local
        return changed

    # ------------------------------------------------------------------ connection limits

    def _syn_map(self) -> dict[bytes, bytes]:
        m = self.maps.get("kgw_syn_limits")
        out = {}
        for k in m.keys():
            v = m.lookup(k)
            if v is not None:
                out[k] = v
        return out

    def _write_syn_limits(self, limits: tuple[ConnectionRateLimit, ...],
                          errors: dict[str, str]) -> int:
        """Bring kgw_syn_limits to the valid ``limits`` (one per listening port); a
        port's limit keeps its id, and so its sources' buckets, across rate changes.
        Returns the entries written or deleted."""
        m = self.maps.get("kgw_syn_limits")
        cap = self.sizes["KGW_MAX_SYN_LIMITS"]
        want: dict[BeIdent, ConnectionRateLimit] = {}
        for lim in limits:
            err = _syn_limit_error(lim)
            ident = (lim.address, lim.port)
            if err is None and ident in want:
                err = (f"port clash: {lim.address}:{lim.port} already has the connection rate "
                       f"limit of {want[ident].name!r}")
            if err is None and ident not in self.syn_limits and len(want) >= cap:
                err = f"too many connection rate limits (the kernel table holds {cap})"
            if err is not None:
                errors[lim.name] = err
                continue
            want[ident] = lim
        changed = 0
        for ident in list(self.syn_limits):
            if ident not in want:
                m.delete(abi.syn_limit_key(*ident))
                del self.syn_limits[ident]
                changed += 1
        for ident, lim in want.items():
            old = self.syn_limits.get(ident)
            if old is None:
                used = {lid for lid, _ in self.syn_limits.values()}
                lid = next(i for i in range(1, cap + len(used) + 2) if i not in used)
            else:
                lid = old[0]
            val = abi.syn_limit_val(lim.per_second, lim.burst, lid)
            if old != (lid, val):
                m.update(abi.syn_limit_key(*ident), val)
                self.syn_limits[ident] = (lid, val)
                changed += 1
        return changed

    # ------------------------------------------------------------------ node changes

    def refresh_node(self) -> int:
        """After a route or address change: rewrite the backend entries whose SNAT source
        changed and the local addresses. Returns the number of entries rewritten; the
        frontends' errors follow (a backend that lost its route is reported)."""
        source_errors: dict[BeIdent, str] = {}
        written = 0
        for ep, bid in sorted(self.be_ids.items()):
            written += self._write_backend(bid, self._backend_value(ep, source_errors))
        self._source_errors = source_errors
        self.errors = self._merged_errors()
        return written + self._write_local()

    # ------------------------------------------------------------------ drift

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
        want = {abi.fe_key(*ident): (ident, abi.fe_val(fid)) for ident, fid in self.fe_ids.items()}
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
                bem.update(abi.u32(bid), self.be_entries[bid])
        if wrong_be:
            affected.update(v.name for v in self.views.values()
                            if any(b in wrong_be for b, _, _ in v.endpoints))

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
            got = ring.lookup_range(abi.maglev_index(v.fe_id, 0, n), n)
            if got == abi.u32s(row):
                continue
            have_row = abi.u32s_of(got)
            diff = [(slot, bid) for slot, (bid, old) in enumerate(zip(row, have_row)) if bid != old]
            counts["kgw_maglev"] += len(diff)
            affected.add(v.name)
            if repair:
                self._write_slots(v.fe_id, diff)

        lam = self.maps.get("kgw_local_addrs")
        want_local = {abi.local_addr_key(a) for a in self.local}
        have_local = {k: lam.lookup(k) for k in lam.keys()}
        one = abi.LOCAL_ADDR_PRESENT
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
