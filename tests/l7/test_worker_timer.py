"""The worker's periodic timeout check survives a failing connection."""

from __future__ import annotations

import asyncio

from kgw_l7.channel import WorkerOptions
from kgw_l7.context import WorkerContext


class Conn:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.swept = 0
        self.closed = False

    def sweep(self, now: float, idle: float, header: float, response: float) -> None:
        self.swept += 1
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
