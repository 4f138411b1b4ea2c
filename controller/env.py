"""What a CLI command may touch: its streams, and how it exits."""

from __future__ import annotations

import asyncio
import enum
import sys
from dataclasses import dataclass, field
from typing import Any, Coroutine, TextIO, TypeVar

T = TypeVar("T")


class ExitStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR = 1
    #: ``kgw validate`` found something the API server or the gateway would reject.
    INVALID = 2
    #: The admin API of a running gateway could not be reached.
    UNAVAILABLE = 3
    INTERRUPTED = 130


@dataclass
class Environment:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    @property
    def stdout_isatty(self) -> bool:
        isatty = getattr(self.stdout, "isatty", None)
        return bool(isatty and isatty())

    def out(self, text: str = "") -> None:
        self.stdout.write(text + "\n")

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")

    def default_format(self, requested: str | None) -> str:
        return requested or ("table" if self.stdout_isatty else "json")


def run_async(main: "Coroutine[Any, Any, T]") -> T:
    """Run the supervisor's event loop on uvloop, without making uvloop the policy.

    Only this loop is uvloop. Threads keep getting the standard loop: pyroute2 runs an
    asyncio loop of its own in worker threads and needs AF_NETLINK datagram endpoints,
    which uvloop does not support.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
