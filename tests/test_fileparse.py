"""Reading files in a child process under a memory and a time budget: a file over either
is refused with a line that says so, the next file gets a fresh child, and the event loop
that waits for it keeps running meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from controller.fileparse import Failure, ParserProcess, read_file
from controller.files import FileSource
from controller.objects import ObjectKey

NS = "apiVersion: v1\nkind: Namespace\nmetadata: {name: small}\n"


def routes(n: int) -> str:
    return "".join(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: "
        f"{{name: r{i}, namespace: big}}\n"
        f"spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [h{i}.example.com]\n"
        f"  rules: [{{backendRefs: [{{name: svc, port: 80}}]}}]\n" for i in range(n))


def one_big_document(size: int) -> str:
    """A single document that is one large list: it must be built whole to be checked."""
    head = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\nlist:\n"
    line = "- host-000000.example.com\n"
    return head + line * (size // len(line))


def _peak_kib(proc) -> int:
    status = Path(f"/proc/{proc.pid}/status").read_text()
    return int(status.split("VmPeak:")[1].split()[0])


async def test_same_documents_as_in_process(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(routes(3) + "---\nkind: [\n")
    pp = ParserProcess()
    try:
        got = await pp.read(p, frozenset())
        assert got == read_file(p) and isinstance(got, Failure) and got.line == 27
        p.write_text(routes(3))
        docs = await pp.read(p, frozenset())
        assert docs == read_file(p) and len(docs) == 3
        # documents the caller has already come back without data
        again = await pp.read(p, frozenset(d.digest for d in docs[:2]))
        assert [d.checked is None for d in again] == [True, True, False]
        assert pp.started == 1
    finally:
        await pp.close()


async def test_a_file_over_the_memory_budget_is_refused(tmp_path: Path) -> None:
    small, big = tmp_path / "small.yaml", tmp_path / "big.yaml"
    small.write_text(NS)
    big.write_text(one_big_document(6 * 1024 * 1024))  # under the size cap
    probe = ParserProcess()
    try:
        assert len(await probe.read(small, frozenset())) == 1
        baseline = _peak_kib(probe._proc) * 1024  # what the child maps with the schema loaded
    finally:
        await probe.close()
    pp = ParserProcess(memory=baseline + 48 * 1024 * 1024)
    try:
        got = await pp.read(big, frozenset())
        assert isinstance(got, Failure) and "MiB of memory" in got.message, got
        assert pp._proc is None  # that child exited; the next file gets a fresh one
        assert len(await pp.read(small, frozenset())) == 1
        assert pp.started == 2
    finally:
        await pp.close()


async def test_a_file_over_the_time_budget_is_refused_and_the_loop_runs_meanwhile(
    tmp_path: Path) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_text(routes(8000))  # ~2 s to read: in the loop's thread it would stall it that long
    gaps = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    pp = ParserProcess(timeout=0.3)
    tick = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        got = await pp.read(slow, frozenset())
        assert isinstance(got, Failure) and "took longer than 0.3s" in got.message, got
        assert time.monotonic() - started < 5  # the budget, plus starting and killing the child
        assert max(gaps) < 0.5, max(gaps)  # (not the parse's seconds: a loaded machine's jitter)
        small = tmp_path / "small.yaml"
        small.write_text(NS)
        assert len(await pp.read(small, frozenset())) == 1
    finally:
        tick.cancel()
        await pp.close()


async def test_a_refused_file_keeps_its_previous_objects(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(routes(2))
    src = FileSource(tmp_path, parser=ParserProcess(timeout=0.5))
    batches = src.batches().__aiter__()
    try:
        first = await asyncio.wait_for(batches.__anext__(), 15)
        assert ObjectKey("HTTPRoute", "big", "r1") in {e.key for e in first.events}
        f.write_text(routes(6000))
        batch = await asyncio.wait_for(batches.__anext__(), 15)
        assert not batch.events
        (problem,) = batch.problems
        assert "/r.yaml: reading took longer than 0.5s" in str(problem)
        assert "keeping this file's previous objects" in str(problem)
    finally:
        await src.close()


async def test_a_child_starting_slowly_does_not_spend_a_files_budget(tmp_path: Path,
                                                                     monkeypatch) -> None:
    """The interpreter's start (slow under load) is bounded by START_TIMEOUT, not by the
    per-file budget; a child that is not ready in time is a retry, not a refused file."""
    import controller.fileparse as fileparse

    f = tmp_path / "ns.yaml"
    f.write_text(NS)
    monkeypatch.setattr(fileparse, "START_TIMEOUT", 0.001)
    pp = ParserProcess(timeout=30)
    try:
        got = await pp.read(f, frozenset())
        assert isinstance(got, Failure) and got.retry and "did not start" in got.message, got
    finally:
        await pp.close()
