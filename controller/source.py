"""The one interface every configuration source implements.

A source turns "what the user declared" into a stream of object events. The file
source (standalone mode) and the Kubernetes watch source both produce the same events,
already defaulted and validated the way the API server would, so the store, translation
and status code below never know which one is running.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass

from controller.objects import Obj, ObjectKey


class EventType(str, enum.Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    key: ObjectKey
    #: The object (for DELETED: its last known state).
    obj: Obj
    resource_version: str
    generation: int


@dataclass(frozen=True, slots=True)
class Problem:
    """Something the source refused, said in one line a user can act on."""

    origin: str  # "examples/routes.yaml:12" or "kube"
    message: str
    key: ObjectKey | None = None
    field: str = ""

    def __str__(self) -> str:
        parts = [self.origin] if self.origin else []
        if self.key is not None:
            parts.append(str(self.key))
        if self.field:
            parts.append(self.field)
        return ": ".join(parts + [self.message])


@dataclass(frozen=True, slots=True)
class Batch:
    """A set of changes to apply together.

    ``problems`` is the source's complete current list (not a delta), so a fixed file
    clears its problem. ``noticed_at`` is the ``time.monotonic()`` at which the source
    saw the change, for measuring source-to-live latency.
    """

    events: tuple[Event, ...]
    problems: tuple[Problem, ...]
    noticed_at: float


class Source(abc.ABC):
    """Yields batches: first the complete initial state (all ADDED), then changes."""

    @abc.abstractmethod
    def batches(self) -> AsyncIterator[Batch]:
        ...

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop watching; the iterator of ``batches`` ends."""

    def origin(self, key: ObjectKey) -> str:
        """Where ``key`` is defined ("routes.yaml:12"), for problems found after the source
        (by translation); "" when the source cannot say."""
        return ""

    def rescan(self) -> bool:
        """Read everything again now (SIGHUP); False when the source has nothing to re-read."""
        return False

    def health(self) -> str:
        """What is wrong with the source's connection now ("" when nothing is).

        A source that loses its upstream (an API server outage) keeps the last good
        objects; this says so, for ``/readyz``.
        """
        return ""
