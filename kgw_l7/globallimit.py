"""The global rate limit: token buckets kept in Redis, so that every kgw node (and every
worker of each) spends from one bucket per descriptor.

One request costs one round trip: EVALSHA of a Lua script that refills and takes from
the bucket in one atomic step on the server (no read-modify-write race between nodes),
reading the server's clock (TIME), so the nodes' clocks do not matter. Only after Redis
lost its script cache (a restart) does the first call pay a second round trip (EVAL,
which caches it again).

Redis down, slow or unresolvable: the call is bounded by the limit's ``timeout``, and the
limit's failure mode decides (open: let the request through; closed: refuse it). After a
failure the address is not tried again for ``BACKOFF`` seconds, so a dead Redis costs
the requests meanwhile nothing but the decision; the first request after that tries
again, which is how the limiter recovers when Redis comes back.

Each worker has its own connection per address (``kgw_l7.redisconn``): the checks of one
loop iteration go out in one write, each still one round trip, each with its own
deadline. The counters are the worker's and are summed over workers by
``kgw_l7.metrics``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

from kgw_l7.problems import PROBLEMS
from kgw_l7.ratelimit import client_ip
from kgw_l7.redisconn import Busy, Connection, ReplyError, connect

log = logging.getLogger("kgw.l7.globallimit")

#: Seconds an address that failed is left alone (decided by the failure mode meanwhile).
BACKOFF = 0.5

#: KEYS[1] the bucket; ARGV max tokens, tokens per fill, fill interval (ms).
#: Returns {allowed (0/1), tokens left, ms until the next fill}.
SCRIPT = """
local max = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil or ts > now then
  tokens = max
  ts = now
end
local fills = math.floor((now - ts) / interval)
if fills > 0 then
  tokens = math.min(max, tokens + fills * per)
  ts = ts + fills * interval
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', ts)
redis.call('PEXPIRE', KEYS[1], (math.ceil(max / per) + 1) * interval)
return {allowed, tokens, interval - (now - ts)}
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: tokens left in the bucket after this request (0 when refused or unknown)
    remaining: int
    #: seconds until the bucket next fills (Retry-After when refused)
    reset: float
    #: "redis", or how a failure was decided: "fail_open" / "fail_closed"
    source: str


def parse_address(address: str) -> tuple[str, int]:
    """"host:port" (port 6379 when absent); ValueError naming what is wrong."""
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = address, "6379"
    host = host.strip("[]")
    if not host:
        raise ValueError(f"redis address {address!r}: no host")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"redis address {address!r}: port {port!r} is not 1-65535")
    return host, int(port)


def failure_reason(e: BaseException) -> str:
    """A short label for a failed call: the metrics' reason and the status message."""
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "unresolvable"
        if isinstance(cause, ConnectionRefusedError):
            return "refused"
        cause = cause.__cause__ or cause.__context__
    text = str(e).lower()
    if "name or service not known" in text or "temporary failure in name resolution" in text \
            or "nodename nor servname" in text:
        return "unresolvable"
    if "connection refused" in text:
        return "refused"
    if "closed" in text:  # the server went away under an open connection
        return "closed"
    return "error"


class _Server:
    """One Redis address: its connection (``kgw_l7.redisconn``) and its health."""

    __slots__ = ("address", "host", "port", "conn", "connecting", "down_until", "last_error",
                 "up")

    def __init__(self, address: str) -> None:
        self.address = address
        self.host, self.port = parse_address(address)
        self.conn: Connection | None = None
        #: the connect in progress, shared by the checks that arrive meanwhile
        self.connecting: asyncio.Future[Connection] | None = None
        self.down_until = 0.0
        self.last_error = ""
        self.up = True

    def connection(self) -> Connection | None:
        """The connection to send on, or None when one must be opened. A connection Redis
        closed is reported once (``ConnectionError``: "closed") to the check that finds
        it, which the failure mode decides and which starts the backoff, rather than a
        reconnect on a request's time to a server that just went away."""
        conn = self.conn
        if conn is None:
            return None
        if conn.retired:  # given up on after a timeout (closed by kgw once drained)
            self.conn = None
            return None
        if conn.broken is not None:
            self.conn = None
            raise ConnectionError(str(conn.broken))
        return conn

    async def connect(self) -> Connection:
        fut = self.connecting
        if fut is None:
            fut = self.connecting = asyncio.ensure_future(connect(self.host, self.port))
            fut.add_done_callback(self._connected)
        # shielded: one check's timeout does not cancel the connect the others wait on
        return await asyncio.shield(fut)

    def _connected(self, fut: asyncio.Future[Connection]) -> None:
        self.connecting = None
        if not fut.cancelled() and fut.exception() is None:
            self.conn = fut.result()

    def close(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _expire(fut: asyncio.Future[Any], conn: Connection) -> None:
    """A check's deadline: its wait ends, and its connection takes no new commands."""
    if not fut.done():
        fut.set_exception(TimeoutError())
        conn.retire()


class GlobalLimiter:
    """Checks requests against global limits; one per worker."""

    def __init__(self) -> None:
        self._servers: dict[str, _Server] = {}
        #: (limit, outcome) -> requests: outcome "allowed" / "limited" / "fail_open" /
        #: "fail_closed"
        self.decisions: dict[tuple[str, str], int] = {}
        #: (address, reason) -> failed calls
        self.errors: dict[tuple[str, str], int] = {}
        #: round trips to Redis (EVALSHA, and EVAL after a script-cache miss)
        self.round_trips = 0

    def _server(self, address: str) -> _Server:
        s = self._servers.get(address)
        if s is None:
            s = self._servers[address] = _Server(address)
        return s

    def _count(self, limit: str, outcome: str) -> None:
        k = (limit, outcome)
        self.decisions[k] = self.decisions.get(k, 0) + 1

    async def check(self, address: str, limit: str, descriptor: str, max_tokens: int,
                    tokens_per_fill: int, fill_interval: float, timeout: float,
                    fail_open: bool) -> Decision:
        """Take one token from the bucket of (limit, descriptor) at ``address``."""
        server = self._server(address)
        now = time.monotonic()
        if now < server.down_until:
            return self._failed(limit, fail_open)
        key = f"kgw:rl:{limit}:{descriptor}"
        args = (max_tokens, tokens_per_fill, max(1, round(fill_interval * 1000)))
        self.round_trips += 1  # tried, as a connect refused is one too
        loop = asyncio.get_running_loop()
        try:
            conn = server.connection()
            if conn is None:
                conn = await asyncio.wait_for(server.connect(), timeout)
                timeout -= time.monotonic() - now
            # (the EVALSHA inline, not in a coroutine of its own: it is the request path)
            deadline = loop.time() + timeout
            fut = conn.send(b"EVALSHA", SCRIPT_SHA, 1, key, *args)
            timer = loop.call_at(deadline, _expire, fut, conn)
            try:
                reply = await fut
            except ReplyError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
                reply = await self._eval_script(conn, key, args, deadline)
            finally:
                timer.cancel()
            allowed, remaining, reset_ms = reply
        except Exception as e:  # noqa: BLE001 — any failure is decided by the failure mode
            return self._failure(server, limit, fail_open, e)
        if not server.up:
            log.info("global rate limit: redis %s is back", address)
            PROBLEMS.ok("redis", address)
            server.up = True
            server.last_error = ""
        if allowed:
            self._count(limit, "allowed")
        else:
            self._count(limit, "limited")
        return Decision(bool(allowed), max(0, remaining), max(0, reset_ms) / 1000, "redis")

    def _failure(self, server: _Server, limit: str, fail_open: bool,
                 e: BaseException) -> Decision:
        address = server.address
        reason = "busy" if isinstance(e, Busy) else failure_reason(e)
        k = (address, reason)
        self.errors[k] = self.errors.get(k, 0) + 1
        if reason == "busy":  # this worker's own backlog, not Redis's health
            return self._failed(limit, fail_open)
        if server.conn is not None and server.conn.broken is not None:
            server.conn = None  # reported now: the next try after the backoff reconnects
        if server.up or server.last_error != reason:
            log.warning("global rate limit: redis %s failed (%s: %s); failing %s for %.1fs",
                        address, reason, e, "open" if fail_open else "closed", BACKOFF)
        PROBLEMS.fail("redis", address, f"{reason} ({e})" if str(e) else reason)
        server.up = False
        server.last_error = reason
        server.down_until = time.monotonic() + BACKOFF
        return self._failed(limit, fail_open)

    def _failed(self, limit: str, fail_open: bool) -> Decision:
        outcome = "fail_open" if fail_open else "fail_closed"
        self._count(limit, outcome)
        return Decision(fail_open, 0, BACKOFF, outcome)

    async def _eval_script(self, conn: Connection, key: str, args: tuple[int, int, int],
                           deadline: float) -> Any:
        """Redis lost its script cache (a restart): the script itself (EVAL), which caches
        it again, by the same deadline."""
        self.round_trips += 1
        fut = conn.send(b"EVAL", SCRIPT, 1, key, *args)
        timer = asyncio.get_running_loop().call_at(deadline, _expire, fut, conn)
        try:
            return await fut
        finally:
            timer.cancel()

    def servers(self) -> int:
        """Redis addresses this limiter has used."""
        return len(self._servers)

    def health(self) -> dict[str, str]:
        """address -> "" when the last call worked, else the last failure's reason."""
        return {a: s.last_error for a, s in self._servers.items()}

    def writes(self) -> int:
        """Writes to Redis (batches of coalesced commands) on the open connections."""
        return sum(s.conn.writes for s in self._servers.values() if s.conn is not None)

    def snapshot(self) -> dict[str, Any]:
        return {"global_ratelimit_decisions": dict(self.decisions),
                "global_ratelimit_errors": dict(self.errors),
                "global_ratelimit_round_trips": self.round_trips}

    async def close(self) -> None:
        for s in self._servers.values():
            s.close()
        self._servers.clear()


class GlobalLimit:
    """A ``config.GlobalRateLimit`` compiled: the bucket key per request and the 429's
    headers prepared (as ``kgw_l7.ratelimit.LocalLimit`` for the local limit)."""

    __slots__ = ("rl", "name", "key", "header", "hops", "interval", "policy_header")

    def __init__(self, rl: Any) -> None:
        self.rl = rl
        self.name = rl.scope
        self.key = rl.key
        self.header = rl.header.lower().encode()
        self.hops = rl.trusted_hops
        if rl.fill_interval >= 1 and rl.fill_interval == int(rl.fill_interval):
            q, w = rl.tokens_per_fill, int(rl.fill_interval)
        else:
            q, w = max(1, round(rl.tokens_per_fill / rl.fill_interval)), 1
        self.policy_header = b'"global";q=%d;w=%d' % (q, w)

    def descriptor(self, headers: tuple[tuple[bytes, bytes], ...], peer: bytes) -> str:
        """The bucket's key within the limit: "" (one bucket), the client's address, or
        the header's value (requests without it share the "" bucket)."""
        key = self.key
        if key == "client_ip":
            return "ip:" + client_ip(headers, peer, self.hops).decode("latin-1")
        if key == "header":
            name = self.header
            for n, v in headers:
                if n == name:
                    return "h:" + v.decode("latin-1")
        return ""

    def check(self, limiter: GlobalLimiter, headers: tuple[tuple[bytes, bytes], ...],
              peer: bytes) -> Any:
        rl = self.rl
        return limiter.check(rl.address, self.name, self.descriptor(headers, peer),
                             rl.max_tokens, rl.tokens_per_fill, rl.fill_interval, rl.timeout,
                             rl.fail_open)

    def refusal_headers(self, reset: float) -> list[tuple[bytes, bytes]]:
        """Retry-After, and the IETF draft's RateLimit-Policy and RateLimit fields."""
        seconds = max(1, math.ceil(reset))
        return [(b"retry-after", b"%d" % seconds),
                (b"ratelimit-policy", self.policy_header),
                (b"ratelimit", b'"global";r=0;t=%d' % seconds)]
