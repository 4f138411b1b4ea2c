"""No error in one batch stops the configuration loop: it is logged and reported, the last
good configuration keeps serving, and the next batch heals it."""

from __future__ import annotations

import asyncio
import json

from controller import confloop
from controller.objects import ObjectKey
from controller.source import Batch, Event, EventType, Source
from controller.supervisor import Supervisor
from controller.translate import Translator
from tests.translate.worlds import CLASS, gateway, norm

HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}


def _added(obj: dict, rv: int) -> Event:
    o = norm(obj, rv)
    return Event(EventType.ADDED, ObjectKey.of(o), o, str(rv), 1)


class ListSource(Source):
    """Batches from a queue; ``None`` ends them, an exception is raised from the stream."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.streams = 0

    async def batches(self):
        self.streams += 1
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class L7:
    def __init__(self) -> None:
        self.applied = []

    async def apply(self, config) -> None:
        self.applied.append(config)

    async def metrics(self) -> bytes:
        return b""

    def listener_errors(self) -> dict:
        return {}

    async def health(self) -> list:
        return []

    async def drain(self) -> None:
        pass


async def _settle(sup: Supervisor, check, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_failing_batch_is_reported_and_the_next_one_heals_it(monkeypatch) -> None:
    src, l7 = ListSource(), L7()
    sup = Supervisor(src, l7=l7)
    runner = asyncio.create_task(sup.run())
    try:
        src.queue.put_nowait(Batch((_added(CLASS, 1), _added(gateway("a", [HTTP]), 2)), (), 0.0))
        await _settle(sup, lambda: len(l7.applied) == 1)
        good = l7.applied[-1]

        real = Translator.update
        calls = {"n": 0}

        def broken(self, store, changed):
            calls["n"] += 1
            if calls["n"] == 1:
                raise MemoryError("translating")
            return real(self, store, changed)

        monkeypatch.setattr(Translator, "update", broken)
        src.queue.put_nowait(Batch((_added(gateway("b", [{**HTTP, "port": 81}]), 3),), (), 0.0))
        await _settle(sup, lambda: sup.loop_error is not None)
        assert not runner.done() and l7.applied[-1] is good  # the last good configuration serves
        problems = json.loads((await sup._problems())[2])["problems"]
        assert "applying a configuration change failed (MemoryError('translating'))" in problems[
            -1]["text"]
        status, _, body = await sup._readyz()
        assert (status == 200 and b"serving the last good configuration" in body
                and b"MemoryError" in body)

        # the next batch, even an unrelated empty one, translates the whole store again
        src.queue.put_nowait(Batch((), (), 0.0))
        await _settle(sup, lambda: sup.loop_error is None)
        assert {lst.port for lst in l7.applied[-1].listeners} == {80, 81}
        assert json.loads((await sup._problems())[2])["problems"] == []
        assert (await sup._readyz())[2] == b"ready\n"
    finally:
        src.queue.put_nowait(None)
        await asyncio.wait_for(runner, 5)


async def test_a_failing_source_is_read_again(monkeypatch) -> None:
    monkeypatch.setattr(confloop, "SOURCE_RETRY", 0.01)
    src, l7 = ListSource(), L7()
    sup = Supervisor(src, l7=l7)
    runner = asyncio.create_task(sup.run())
    try:
        src.queue.put_nowait(RuntimeError("watch broke"))
        await _settle(sup, lambda: src.streams == 2)
        assert ("reading the configuration source failed (RuntimeError('watch broke'))"
                in sup.loop_error.message)
        src.queue.put_nowait(Batch((_added(CLASS, 1), _added(gateway("a", [HTTP]), 2)), (), 0.0))
        await _settle(sup, lambda: sup.loop_error is None and l7.applied)
    finally:
        src.queue.put_nowait(None)
        await asyncio.wait_for(runner, 5)
