"""kgw_l7.healthcheck's TCP checks as the checker runs them (a bare non-blocking connect
watched by the checker's epoll, started and timed out by its ticker, dissolved with
connect(AF_UNSPEC)), against real sockets on loopback: a port with no listener fails
(RST), a listener that never accepts times out, a backend that accepts and closes at once
is healthy, IPv6 works, and a target removed with its connect in flight leaves nothing
behind. One socket serves every probe of a target: after a success (SYN, SYN-ACK, RST:
the backend's application never sees it), after a refused probe and after a timed-out
one, on IPv4 and IPv6. And the ticker itself: starts are never early and those due in
one slot run in one wake-up; timeouts fire unless forgotten."""

from __future__ import annotations

import asyncio
import errno
import math
import socket
import threading
from collections.abc import Callable

import pytest
import uvloop

from kgw_l7.config import HealthCheck
from kgw_l7.healthcheck import TICK, HealthChecker, Target, _TcpCheck, _Ticker

FAST = HealthCheck(type="TCP", interval=0.05, timeout=0.3, unhealthy_threshold=1,
                   healthy_threshold=1)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Each test on asyncio's loop and on uvloop's (the planes run uvloop)."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


def _check_until(run, target: Target, done, seconds: float = 5.0) -> dict:
    """Run a checker on ``target`` until ``done(view row)``; the row."""
    async def go() -> dict:
        checker = HealthChecker(lambda: None)
        checker.set_targets({target.key: target})
        assert isinstance(checker._tasks[target.key], _TcpCheck)
        try:
            for _ in range(int(seconds / 0.02)):
                await asyncio.sleep(0.02)
                [row] = checker.view()
                if done(row):
                    return row
            raise AssertionError(f"not done in {seconds}s: {checker.view()}")
        finally:
            await checker.close()
    return run(go())


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_no_listener_fails_with_connection_refused(run):
    row = _check_until(run, Target("b", "127.0.0.1", _free_port(), FAST),
                       lambda r: r["failures"] >= 2)
    assert not row["healthy"]
    assert "Connection refused" in row["last_error"], row


def _full_listener() -> tuple[socket.socket, int, list[socket.socket]]:
    """A listener whose accept queue is full (nothing accepts): a probe's SYN is dropped
    and its connect never ends. (The listener, its port, the connections filling it.)"""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    port = s.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        assert c.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
        fillers.append(c)
    return s, port, fillers


def test_a_listener_that_never_accepts_times_out(run):
    s, port, fillers = _full_listener()
    try:
        row = _check_until(run, Target("b", "127.0.0.1", port, FAST),
                           lambda r: r["failures"] >= 1, seconds=3)
        assert not row["healthy"] and row["last_error"] == "no answer within 0.3s", row
    finally:
        for c in fillers:
            c.close()
        s.close()


def _accept_and_close(s: socket.socket) -> None:
    """In a thread until ``s`` is closed: accept each connection and close it."""
    def serve() -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            c.close()

    threading.Thread(target=serve, daemon=True).start()


def test_a_backend_that_accepts_and_closes_is_healthy(run):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    port = s.getsockname()[1]
    _accept_and_close(s)
    try:
        row = _check_until(run, Target("b", "127.0.0.1", port, FAST), lambda r: r["checks"] >= 5)
        assert row["healthy"] and row["failures"] == 0, row
    finally:
        s.close()


def test_ipv6(run):
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    s.listen(64)
    port = s.getsockname()[1]
    try:
        row = _check_until(run, Target("b", "::1", port, FAST), lambda r: r["checks"] >= 3)
        assert row["healthy"] and row["failures"] == 0, row
    finally:
        s.close()
    row = _check_until(run, Target("b", "::1", port, FAST), lambda r: r["failures"] >= 1)
    assert "Connection refused" in row["last_error"]


def test_a_hostname_or_tls_target_is_checked_by_a_task(run):
    async def go() -> list[bool]:
        checker = HealthChecker(lambda: None)
        plain = Target("b", "localhost", 1, FAST)
        tls = Target("b", "127.0.0.1", 2, FAST, tls_hostname="svc.local")
        checker.set_targets({plain.key: plain, tls.key: tls})
        kinds = [isinstance(c, asyncio.Task) for c in checker._tasks.values()]
        await checker.close()
        return kinds
    assert run(go()) == [True, True]


def test_removing_a_target_mid_connect_leaves_nothing(run):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    port = s.getsockname()[1]
    fillers = [socket.socket() for _ in range(4)]
    for c in fillers:
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
    hung = Target("b", "127.0.0.1", port, HealthCheck(type="TCP", interval=0.01, timeout=5))
    results: list[bool] = []

    async def go() -> None:
        checker = HealthChecker(lambda: None)
        real_result = checker.result
        checker.result = lambda t, ok, e: (results.append(ok), real_result(t, ok, e))
        checker.set_targets({hung.key: hung})
        check = checker._tasks[hung.key]
        for _ in range(100):
            await asyncio.sleep(0.01)
            if check.sock is not None:  # type: ignore[union-attr]
                break
        assert check.sock is not None  # type: ignore[union-attr]
        checker.set_targets({})
        assert check.sock is None and not checker.poller._waiting  # type: ignore[union-attr]
        assert not any(checker.ticker._deadlines.values())
        await asyncio.sleep(0.1)
        await checker.close()

    try:
        run(go())
    finally:
        for c in fillers:
            c.close()
        s.close()
    assert results == []  # (stopped before its timeout: no result, no next start)


def _probe_sockets(run, target: Target, phases: list[Callable[[dict], bool]],
                   between: Callable[[], None] | None = None, seconds: float = 5.0
                   ) -> tuple[list[dict], int]:
    """Check ``target`` until each of ``phases`` holds in turn (calling ``between``
    after the first); the view row at the end of each phase, and how many sockets the
    check used (each kept referenced, so no id is reused)."""
    async def go() -> tuple[list[dict], int]:
        checker = HealthChecker(lambda: None)
        checker.set_targets({target.key: target})
        check = checker._tasks[target.key]
        assert isinstance(check, _TcpCheck)
        used: dict[int, socket.socket] = {}
        rows = []
        try:
            for i, done in enumerate(phases):
                if i == 1 and between is not None:
                    between()
                for _ in range(int(seconds / 0.01)):
                    await asyncio.sleep(0.01)
                    if check.sock is not None:
                        used[id(check.sock)] = check.sock
                    [row] = checker.view()
                    if done(row):
                        break
                else:
                    raise AssertionError(f"phase {i} not done in {seconds}s: {row}")
                rows.append(row)
        finally:
            await checker.close()
        assert check.sock is None  # (closed with the checker)
        return rows, len(used)
    return run(go())


def test_one_socket_serves_every_probe_and_the_backend_application_sees_none(run):
    """A probe is SYN, SYN-ACK, RST: the handshake's last ACK is deferred
    (TCP_DEFER_ACCEPT) and the connection dissolved first, so the backend's kernel
    answers it but never queues a connection for the application to accept; and the
    same socket connects again next time."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    s.settimeout(0.05)
    port = s.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                c, peer = s.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(peer)
            c.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        [row], used = _probe_sockets(run, Target("b", "127.0.0.1", port, FAST),
                                     [lambda r: r["checks"] >= 5])
        stop.set()
        thread.join(5)
    finally:
        s.close()
    assert row["healthy"] and row["failures"] == 0, row
    assert used == 1, used
    assert accepted == [], accepted


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_socket_is_reused_after_a_refused_probe(run, host):
    try:
        port = _free_port(host)
    except OSError:
        pytest.skip("no IPv6 loopback")
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def listen() -> None:
        s.bind((host, port))
        s.listen(64)

    try:
        (down, up), used = _probe_sockets(
            run, Target("b", host, port, FAST),
            [lambda r: r["failures"] >= 2, lambda r: r["healthy"] and r["checks"] >= 8],
            between=listen)
    finally:
        s.close()
    assert not down["healthy"] and "Connection refused" in down["last_error"], down
    assert up["failures"] == down["failures"], (down, up)  # (no stale error after)
    assert used == 1, used


def test_the_socket_is_reused_after_a_timed_out_probe(run):
    s, port, fillers = _full_listener()

    def drain() -> None:
        """Empty the accept queue and keep it empty: the next probe gets through."""
        for c in fillers:
            c.close()
        _accept_and_close(s)

    try:
        (down, up), used = _probe_sockets(
            run, Target("b", "127.0.0.1", port, FAST),
            [lambda r: r["failures"] >= 1, lambda r: r["healthy"] and r["checks"] >= 5],
            between=drain)
    finally:
        s.close()
    assert not down["healthy"] and down["last_error"] == "no answer within 0.3s", down
    assert used == 1, used


class _CountingTicker(_Ticker):
    __slots__ = ("wakeups",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.wakeups = 0

    def _fire(self) -> None:
        self.wakeups += 1
        super()._fire()


def test_ticker_batches_starts_never_early(run):
    async def go() -> tuple[list[tuple[int, float]], int]:
        loop = asyncio.get_running_loop()
        ticker = _CountingTicker(loop)
        ran: list[tuple[int, float]] = []
        due: dict[int, float] = {}
        t0 = loop.time()
        for i in range(50):
            delay = 0.001 * i
            due[i] = t0 + delay
            ticker.after(delay, lambda i=i: ran.append((i, loop.time())))
        await asyncio.sleep(0.2)
        early = [i for i, at in ran if at < due[i] - 0.001]  # (the loop's ms rounding)
        wakeups = ticker.wakeups
        ticker.close()
        assert not early, early
        return ran, wakeups
    ran, wakeups = run(go())
    assert sorted(i for i, _ in ran) == list(range(50))
    # 50 starts over 49 ms: one wake-up per TICK slot they fall in, not one each
    assert wakeups <= math.ceil(0.049 / TICK) + 1, wakeups


def test_ticker_timeouts_fire_unless_forgotten(run):
    class Check:
        def __init__(self) -> None:
            self.expired_at: float | None = None

        def expire(self) -> None:
            self.expired_at = asyncio.get_running_loop().time()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        ticker = _Ticker(loop)
        a, b, c = Check(), Check(), Check()
        t0 = loop.time()
        ticker.watch(a, 0.05)
        ticker.watch(b, 0.05)
        ticker.watch(c, 0.08)
        assert ticker.forget(b, 0.05)
        await asyncio.sleep(0.15)
        assert a.expired_at is not None and a.expired_at >= t0 + 0.05 - 0.001
        assert b.expired_at is None
        assert c.expired_at is not None and c.expired_at >= t0 + 0.08 - 0.001
        assert not ticker.forget(a, 0.05)  # (expired: nothing to forget)
        ticker.close()
    run(go())
