"""The worker's periodic timeout check survives a failing connection."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from kgw_l7.channel import WorkerOptions
from kgw_l7.context import WorkerContext


class Conn:
    def __init__(self, fail: bool, header_timeout: float = 0.0) -> None:
        self.fail = fail
        self.swept = 0
        self.closed = False
        self.listener = SimpleNamespace(header_timeout=header_timeout)
        self.header = 0.0

    def sweep(self, now: float, idle: float, header: float, response: float) -> None:
        self.swept += 1
        self.header = header
        if self.fail:
            raise RuntimeError("broken connection state")

    def close(self) -> None:
        self.closed = True


async def test_sweep_keeps_running_past_a_failing_connection(caplog):
    ctx = WorkerContext(asyncio.get_running_loop(), WorkerOptions(access_log="off"))
    bad, good = Conn(True), Conn(False)
    ctx.conns.update((bad, good))
    first = ctx._sweeper
    ctx._sweep()
    assert good.swept == 1 and bad.swept == 1 and bad.closed and not good.closed
    assert ctx._sweeper is not first and not ctx._sweeper.cancelled()
    assert "timeout check failed" in caplog.text
    ctx._sweeper.cancel()
    first.cancel()


async def test_a_listener_policy_header_timeout_replaces_the_default():
    ctx = WorkerContext(asyncio.get_running_loop(),
                        WorkerOptions(access_log="off", header_timeout=10.0))
    plain, policed = Conn(False), Conn(False, header_timeout=2.0)
    ctx.conns.update((plain, policed))
    first = ctx._sweeper
    ctx._sweep()
    assert (plain.header, policed.header) == (10.0, 2.0)
    ctx._sweeper.cancel()
    first.cancel()
