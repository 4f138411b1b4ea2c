"""The configuration loop's guarantees: no error in one batch stops the gateway.

The supervisor applies each batch of its source (store, translation, data planes,
status). Whatever one batch raises - a bug in translation, MemoryError, a source that
fails - is logged with its traceback, reported in ``/problems`` and in the body of
``/readyz``, and the data planes keep the last configuration they took. The next batch
translates everything again (the incremental translator's state is not trusted after a
failure), so a later fix, or a later unrelated change, heals it. A source whose stream
of batches itself fails is read again after a pause.

Also here: the supervisor's list of problems, which is the source's (files it refused)
plus translation's (things only translation can see, such as a route whose parentRef
names a Gateway that does not exist), each with the source's origin ("routes.yaml:12").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from controller.source import Batch, Problem, Source
from controller.translate import Translator

if TYPE_CHECKING:
    from controller.supervisor import Supervisor

log = logging.getLogger("kgw")

#: Pause before reading a failed source again.
SOURCE_RETRY = 1.0


async def run(sup: Supervisor) -> None:
    """Apply every batch of ``sup.source``, surviving any error in one of them."""
    while True:
        try:
            async for batch in sup.source.batches():
                await apply_safely(sup, batch)
            return
        except Exception as exc:  # the source's stream failed: read it again
            failed(sup, "reading the configuration source", exc)
            await asyncio.sleep(SOURCE_RETRY)


async def apply_safely(sup: Supervisor, batch: Batch) -> None:
    try:
        await sup.apply(batch)
    except Exception as exc:
        failed(sup, "applying a configuration change", exc)
        # The translator may have stopped halfway through its bookkeeping: the next
        # batch starts from a fresh one, which translates the whole store.
        sup.translator = Translator(sup.translator.options)
    else:
        if sup.loop_error is not None:
            log.info("configuration loop: %s is over; serving the current configuration",
                     sup.loop_error.message.split(";")[0])
            sup.loop_error = None
            publish_problems(sup)


def failed(sup: Supervisor, what: str, exc: BaseException) -> None:
    log.exception("%s failed; serving the last good configuration", what)
    sup.loop_error = Problem("kgw", f"{what} failed ({exc!r}); serving the last good configuration "
                                    f"(generation {sup.generation})")
    publish_problems(sup)


def publish_problems(sup: Supervisor) -> None:
    """``sup.problems``: the source's, translation's and the loop's; new ones are logged."""
    problems = list(sup._source_problems)
    if sup.translation is not None:
        problems.extend(located(sup.source, sup.translation.problems))
    if sup.loop_error is not None:
        problems.append(sup.loop_error)
    # (a problem is new when its object, field or message is: not when only its origin
    # moved, or is unknown for a moment because its file was just removed)
    before = {_identity(p) for p in sup.problems}
    for p in problems:
        if _identity(p) not in before:
            log.error("%s", p)
    sup.problems = tuple(problems)
    sup.metrics.problems.set(len(problems))


def _identity(p: Problem) -> tuple:
    return (p.key, p.field, p.message) if p.key is not None else (p.origin, p.field, p.message)


def located(source: Source, problems: Iterable[Problem]) -> list[Problem]:
    """Translation's problems, each with where the source defines its object."""
    return [Problem((source.origin(p.key) if p.key is not None else "") or p.origin, p.message,
                    p.key, p.field)
            for p in problems]


def trouble(sup: Supervisor) -> str:
    """What is wrong with the configuration while the gateway serves the last good one
    (for ``/readyz``'s body): the source's health and a failed batch."""
    parts = [sup.source.health()]
    if sup.loop_error is not None:
        parts.append(sup.loop_error.message)
    return "; ".join(p for p in parts if p)
