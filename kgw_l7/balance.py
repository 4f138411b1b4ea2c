"""Endpoint choice for one backend in one worker: the load-balancing algorithm, and which
endpoints may be chosen at all (active health checks, outlier ejection, panic, slow
start).

The one interface the exchange (and session persistence) uses::

    bal = Balancer("ns/svc:80", endpoints, lb, outlier, book)
    ep = bal.pick(key)              # (address, port) or None: nothing to send to
    ep = bal.pick_untried(tried, key)
    bal.usable(ep)                  # may this endpoint be chosen now? (sticky sessions)
    st = bal.begin(ep)              # a try starts (in-flight count, least request)
    bal.end(st, outcome, now)       # ... and ends: OK, SERVER_ERROR or LOCAL_FAILURE

Per-endpoint state (``EndpointState``) lives in the worker's ``HealthBook``, keyed by
(backend name, endpoint), so that an ejection, an active check's verdict or an in-flight
count survives a config change that recompiles the backend. The book's ``version``
changes whenever an endpoint becomes usable or unusable; a balancer recomputes its usable
set only then, or when an ejection it knows of runs out (``_until``).

Algorithms (``LoadBalancer.algorithm``):

* RoundRobin -- over the usable endpoints, in order.
* Random -- uniform over the usable endpoints.
* LeastRequest -- power of ``choice_count`` choices: sample that many usable endpoints,
  keep the one with the fewest requests in flight per unit of weight.
* ConsistentHash -- Maglev (``kgw_l4.maglev.build_table``, the table the L4 plane uses)
  over every endpoint; a request's key picks a slot, and an unusable endpoint's slots
  fall through to the next slot's endpoint, so only its keys move. A request without the
  key (header, cookie or query parameter absent) is balanced round robin, as Envoy does.

Panic: when fewer than ``panic_threshold`` percent of the endpoints are usable, every
endpoint is (Envoy's healthy panic threshold): with most of a backend failing, spreading
the load beats piling it on the few that are left. Slow start: an endpoint added after
the backend was first seen takes a share rising from 10% to 100% over the window
(round robin, random and least request; a hash maps keys, it does not share load).
"""

from __future__ import annotations

import logging
import math
import random
import time
import zlib
from random import random as _random
from collections.abc import Callable, Sequence

from kgw_l4.maglev import WeightedEndpoint, build_table
from kgw_l7.config import HashOn, LoadBalancer, OutlierDetection

log = logging.getLogger("kgw.l7.balance")

Address = tuple[str, int]

#: Outcomes of a try, as outlier detection counts them.
OK, SERVER_ERROR, LOCAL_FAILURE = 0, 1, 2

#: Maglev table sizes for consistent hashing (primes): the small one for up to
#: ``HASH_SMALL_MAX`` endpoints (200+ slots each), the large one (kgw_l4's) above, so a
#: change moves close to 1/N of the keys. Built once per compiled backend (~0.1 s for the
#: large one in pure Python).
HASH_TABLE_SIZE = 4093
HASH_TABLE_SIZE_LARGE = 16381
HASH_SMALL_MAX = 20
#: Slow start: the smallest share a ramping endpoint gets (Envoy's min_weight_percent).
SLOW_START_MIN = 0.1
#: Picks tried before a slow-starting endpoint is taken anyway.
SLOW_START_TRIES = 4

_ROUND_ROBIN, _RANDOM, _LEAST_REQUEST, _HASH = 0, 1, 2, 3
_ALGORITHMS = {"RoundRobin": _ROUND_ROBIN, "Random": _RANDOM, "LeastRequest": _LEAST_REQUEST,
               "ConsistentHash": _HASH}


class EndpointState:
    """What one worker knows about one endpoint of one backend."""

    __slots__ = ("address", "weight", "added", "active_ok", "ejected_until", "ejections",
                 "returned_at", "fails_5xx", "fails_local", "in_flight")

    def __init__(self, address: Address, added: float) -> None:
        self.address = address
        self.weight = 1
        #: When it appeared (slow start); -inf for an endpoint of the backend's first set.
        self.added = added
        #: The active health check's verdict (True until a check says otherwise).
        self.active_ok = True
        #: Ejected by outlier detection until then (0: not ejected); how many times.
        self.ejected_until = 0.0
        self.ejections = 0
        self.returned_at = 0.0
        #: Consecutive failures of each kind (outlier detection).
        self.fails_5xx = 0
        self.fails_local = 0
        self.in_flight = 0

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now


class HealthBook:
    """Every endpoint state of a worker, by (backend name, address). One per worker
    (``RouterCache.book``); the active checker's verdicts arrive here."""

    __slots__ = ("_states", "_backends", "version", "ejections_total", "clock", "_unhealthy")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._states: dict[tuple[str, Address], EndpointState] = {}
        #: Backend names seen (an endpoint of a backend's first set does not slow-start).
        self._backends: set[str] = set()
        #: Bumped whenever an endpoint's usability changes.
        self.version = 0
        self.ejections_total = 0
        self.clock = clock
        #: The last verdicts of the active checker: an endpoint created later (a config
        #: applied after them) starts with its verdict.
        self._unhealthy: frozenset[tuple[str, str, int]] = frozenset()

    def states(self, backend: str, endpoints: Sequence[Address]) -> list[EndpointState]:
        """The states of ``endpoints``, created for the new ones."""
        first = backend not in self._backends
        self._backends.add(backend)
        now = self.clock()
        out = []
        for ep in endpoints:
            st = self._states.get((backend, ep))
            if st is None:
                st = self._states[(backend, ep)] = EndpointState(ep, -math.inf if first
                                                                 else now)
                if (backend, ep[0], ep[1]) in self._unhealthy:
                    st.active_ok = False
            out.append(st)
        return out

    def retain(self, keep: set[tuple[str, Address]]) -> None:
        """Forget endpoints no longer configured (their state goes with them)."""
        for key in [k for k in self._states if k not in keep]:
            del self._states[key]
        self._backends = {name for name, _ in keep}

    def set_active(self, backend: str, address: Address, ok: bool) -> bool:
        """The active checker's verdict on one endpoint; True if it changed anything."""
        st = self._states.get((backend, address))
        if st is None or st.active_ok == ok:
            return False
        st.active_ok = ok
        self.version += 1
        return True

    def sync_active(self, unhealthy: frozenset[tuple[str, str, int]]) -> int:
        """The active checker's verdicts, all at once: the endpoints in ``unhealthy``
        (backend name, address, port) fail their checks, every other passes. Returns
        how many states changed."""
        changed = 0
        for (backend, address), st in self._states.items():
            ok = (backend, address[0], address[1]) not in unhealthy
            if st.active_ok != ok:
                st.active_ok = ok
                changed += 1
        self._unhealthy = unhealthy
        if changed:
            self.version += 1
        return changed

    def get(self, backend: str, address: Address) -> EndpointState | None:
        return self._states.get((backend, address))

    def view(self) -> dict[str, list[dict[str, object]]]:
        """Health per backend and endpoint (config dump, status)."""
        now = self.clock()
        out: dict[str, list[dict[str, object]]] = {}
        for (backend, (addr, port)), st in sorted(self._states.items()):
            out.setdefault(backend, []).append({
                "address": f"{addr}:{port}", "active_ok": st.active_ok,
                "ejected": st.ejected(now), "ejections": st.ejections,
                "in_flight": st.in_flight})
        return out


def hash32(key: bytes) -> int:
    """A hash of ``key`` that every worker process computes alike (Python's ``hash`` of
    bytes is salted per process), mixed (murmur3's finaliser) so that CRC-32's linear
    structure does not show in ``% table size``."""
    h = zlib.crc32(key)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


class KeySource:
    """Where a consistent-hash key comes from in a request (``HashOn`` compiled)."""

    __slots__ = ("header", "cookie", "query", "source_ip")

    def __init__(self, on: HashOn) -> None:
        self.header = on.header.lower().encode("latin-1") if on.header else None
        self.cookie = on.cookie.encode("latin-1") if on.cookie else None
        self.query = on.query.encode("latin-1") if on.query else None
        self.source_ip = on.source_ip

    def key(self, headers: Sequence[tuple[bytes, bytes]], query: bytes,
            peer: bytes | None) -> bytes | None:
        """The key, or None when the request does not carry it (-> round robin)."""
        if self.header is not None:
            name = self.header
            for n, v in headers:
                if n == name:
                    return v
            return None
        if self.cookie is not None:
            return cookie_value(headers, self.cookie)
        if self.query is not None:
            return query_value(query, self.query)
        if self.source_ip:
            return peer or None
        return None


def cookie_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of cookie ``name`` in the request's Cookie header(s), if any."""
    for n, v in headers:
        if n != b"cookie":
            continue
        for part in v.split(b";"):
            k, eq, val = part.strip().partition(b"=")
            if eq and k == name:
                return val
    return None


def query_value(query: bytes, name: bytes) -> bytes | None:
    """The (raw, undecoded) value of query parameter ``name``, if present."""
    if not query:
        return None
    for part in query.split(b"&"):
        k, _eq, val = part.partition(b"=")
        if k == name:
            return val
    return None


class Balancer:
    """See the module docstring."""

    __slots__ = ("name", "endpoints", "states", "by_address", "algorithm", "choices",
                 "keys", "slow_start", "panic", "outlier", "book", "_rr", "_ver", "_until",
                 "_usable", "_ok", "_table", "panicking", "tracks", "equal_weights")

    def __init__(self, name: str, endpoints: Sequence[Address], lb: LoadBalancer | None,
                 outlier: OutlierDetection | None, book: HealthBook) -> None:
        lb = lb or LoadBalancer()
        self.name = name
        self.endpoints = tuple(endpoints)
        self.book = book
        self.states = tuple(book.states(name, self.endpoints))
        self.by_address = {st.address: st for st in self.states}
        self.equal_weights = len({st.weight for st in self.states}) <= 1
        self.algorithm = _ALGORITHMS[lb.algorithm]
        self.choices = max(2, lb.choice_count)
        self.keys = KeySource(lb.hash_on) if lb.hash_on is not None else None
        self.slow_start = lb.slow_start_window
        self.panic = lb.panic_threshold
        self.outlier = outlier
        #: The exchange must report each try (begin/end): least request counts requests
        #: in flight, outlier detection counts failures.
        self.tracks = self.algorithm == _LEAST_REQUEST or outlier is not None
        self._rr = random.randrange(len(self.states)) if self.states else 0
        self._table: list[int] | None = None
        if self.algorithm == _HASH and self.states:
            self._table = build_table([WeightedEndpoint(f"{a}:{p}", 1)
                                       for a, p in self.endpoints],
                                      HASH_TABLE_SIZE if len(self.states) <= HASH_SMALL_MAX
                                      else HASH_TABLE_SIZE_LARGE)
        self._ver = -1
        self._until = 0.0
        self._usable: tuple[EndpointState, ...] = ()
        #: Per index into ``states``: may it be chosen now (panic makes every one usable).
        self._ok: list[bool] = [True] * len(self.states)
        #: Fewer usable endpoints than the panic threshold: every endpoint is used.
        self.panicking = False

    # -- which endpoints may be chosen ----------------------------------------------------
    def refresh(self, now: float) -> tuple[EndpointState, ...]:
        """The usable endpoints now (recomputed when the book changed or an ejection
        ran out)."""
        if self._ver == self.book.version and now < self._until:
            return self._usable
        until = math.inf
        usable = []
        for st in self.states:
            if st.ejected_until:
                if st.ejected_until > now:
                    until = min(until, st.ejected_until)
                    continue
                st.ejected_until = 0.0  # back from ejection
                st.returned_at = now
                log.info("backend %s: endpoint %s:%d returns from ejection", self.name,
                         *st.address)
            if st.active_ok:
                usable.append(st)
        self.panicking = bool(self.states) and \
            len(usable) * 100 < self.panic * len(self.states)
        if self.panicking:
            usable = list(self.states)
        chosen = {id(st) for st in usable}
        self._ok = [id(st) in chosen for st in self.states]
        self._usable = tuple(usable)
        self._ver = self.book.version
        self._until = until
        return self._usable

    def usable(self, address: Address) -> bool:
        st = self.by_address.get(address)
        if st is None:
            return False
        self.refresh(self.book.clock())
        return self._ok[self.states.index(st)]

    # -- choosing ---------------------------------------------------------------------------
    def pick(self, key: bytes | None = None) -> Address | None:
        """An endpoint for the next try, or None when there is none to send to."""
        now = self.book.clock()
        usable = self.refresh(now)
        n = len(usable)
        if n == 0:
            return None
        algorithm = self.algorithm
        if algorithm == _HASH and key is not None:
            return self._by_hash(key)
        if n == 1:
            return usable[0].address
        if algorithm == _LEAST_REQUEST:
            return self._least_request(usable, n, now)
        for _ in range(SLOW_START_TRIES if self.slow_start else 1):
            if algorithm == _RANDOM:
                st = usable[int(_random() * n)]
            else:
                i = self._rr
                self._rr = i + 1
                st = usable[i % n]
            if not self.slow_start or _random() < self._ramp(st, now):
                break
        return st.address

    def _ramp(self, st: EndpointState, now: float) -> float:
        """Slow start: the share of its full weight the endpoint takes now (0.1 to 1)."""
        age = now - st.added
        if age >= self.slow_start:
            return 1.0
        return max(SLOW_START_MIN, age / self.slow_start)

    def _least_request(self, usable: tuple[EndpointState, ...], n: int, now: float) -> Address:
        if self.choices == 2 and not self.slow_start and self.equal_weights:
            # the common case, unrolled: two distinct endpoints, fewer in flight wins
            i = int(_random() * n)
            j = int(_random() * (n - 1))
            if j >= i:
                j += 1
            a, b = usable[i], usable[j]
            return a.address if a.in_flight <= b.in_flight else b.address
        best = None
        best_score = math.inf
        ramp = self.slow_start
        # The first two samples are distinct (with two endpoints, both are compared);
        # further ones (choice_count > 2) may repeat.
        # (int(random() * n): random.randrange costs several times more, and n is far
        # below the 2**53 where the float's resolution would skew it)
        first = int(_random() * n)
        for c in range(self.choices):
            if c == 0:
                i = first
            elif c == 1:
                i = int(_random() * (n - 1))
                if i >= first:
                    i += 1
            else:
                i = int(_random() * n)
            st = usable[i]
            weight = st.weight * (self._ramp(st, now) if ramp else 1.0)
            score = (st.in_flight + 1) / weight
            if score < best_score:
                best, best_score = st, score
        return best.address  # type: ignore[union-attr]  # (choices >= 2: one was kept)

    def _by_hash(self, key: bytes) -> Address:
        table: list[int] = self._table  # type: ignore[assignment]  # (built for _HASH)
        size = len(table)
        slot = hash32(key) % size
        ok = self._ok
        for j in range(size):
            i = table[(slot + j) % size]
            if ok[i]:
                return self.states[i].address
        return self.states[table[slot]].address  # (unreachable: refresh found one usable)

    def pick_untried(self, tried: list[Address], key: bytes | None = None) -> Address | None:
        """For a retry: an endpoint this request has not tried yet, if there is one
        (Envoy's previous_hosts retry predicate); else any."""
        first = self.pick(key)
        if first is None or first not in tried:
            return first
        for st in self._usable:
            if st.address not in tried:
                return st.address
        return first

    # -- what tries report ---------------------------------------------------------------
    def begin(self, address: Address) -> EndpointState | None:
        st = self.by_address.get(address)
        if st is not None:
            st.in_flight += 1
        return st

    def end(self, st: EndpointState | None, outcome: int, now: float) -> bool:
        """A try on ``st`` ended with ``outcome``; True if that ejected the endpoint."""
        if st is None:
            return False
        if st.in_flight > 0:
            st.in_flight -= 1
        od = self.outlier
        if od is None:
            return False
        if outcome == OK:
            st.fails_5xx = st.fails_local = 0
            return False
        if outcome < 0 or st.ejected(now):
            return False  # (failures of tries begun before it was ejected count for nothing)
        if outcome == SERVER_ERROR:
            st.fails_5xx += 1
            hit = od.consecutive_5xx and st.fails_5xx >= od.consecutive_5xx
        else:
            st.fails_local += 1
            hit = od.consecutive_local_failures and \
                st.fails_local >= od.consecutive_local_failures
        if not hit:
            return False
        return self.eject(st, now)

    def eject(self, st: EndpointState, now: float) -> bool:
        """Eject ``st`` unless that would exceed the maximum ejection percentage (at
        least one endpoint may always be ejected, as Envoy does)."""
        od: OutlierDetection = self.outlier  # type: ignore[assignment]  # (callers check)
        ejected = sum(1 for s in self.states if s.ejected(now))
        allowed = max(1, int(len(self.states) * od.max_ejection_percent / 100))
        st.fails_5xx = st.fails_local = 0
        if ejected >= allowed:
            return False
        if st.ejections and st.returned_at and od.base_ejection_time > 0:
            # The multiplier decays by one per base time spent back in service.
            calm = int((now - st.returned_at) / od.base_ejection_time)
            st.ejections = max(0, st.ejections - calm)
        st.ejections += 1
        duration = min(od.base_ejection_time * st.ejections, od.max_ejection_time)
        st.ejected_until = now + duration
        self.book.version += 1
        self.book.ejections_total += 1
        log.warning("backend %s: endpoint %s:%d ejected for %gs (ejection %d)", self.name,
                    st.address[0], st.address[1], duration, st.ejections)
        return True


__all__ = ["LOCAL_FAILURE", "OK", "SERVER_ERROR", "Balancer", "EndpointState", "HealthBook",
           "KeySource", "cookie_value", "hash32", "query_value"]
