"""What a CLI command may touch: its streams, and how it exits (after httpie's
``Environment`` and ``ExitStatus``)."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass, field
from typing import TextIO


class ExitStatus(enum.IntEnum):
    """Every exit code of ``kgw`` and ``kgw-inspect``: a code means the same in both."""

    SUCCESS = 0
    #: The command failed: a plane that cannot start, maps that cannot be read, ...
    ERROR = 1
    #: The command line is wrong (argparse's own code), or ``kgw validate`` found
    #: something the API server or the gateway would reject.
    INVALID = 2
    #: What the command reads is not there: the admin API of a running gateway cannot be
    #: reached, or no kernel plane has pinned its maps here.
    UNAVAILABLE = 3
    #: ``kgw-inspect flow``: no frontend matches the flow.
    NOT_FOUND = 4
    INTERRUPTED = 130

    # Older names of the same codes, which kgw-inspect's callers (tests, scripts) use.
    OK = 0
    USAGE = 2
    NO_STATE = 3


@dataclass
class Environment:
    """The streams a command writes to. Commands never print(): tests pass StringIOs."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)

    @property
    def stdout_isatty(self) -> bool:
        isatty = getattr(self.stdout, "isatty", None)
        return bool(isatty and isatty())

    def out(self, text: str = "", *, flush: bool = False) -> None:
        """One line on stdout; ``flush`` for a line a process on a pipe waits for."""
        self.stdout.write(text + "\n")
        if flush:
            self.stdout.flush()

    def err(self, text: str) -> None:
        self.stderr.write(text + "\n")

    def default_format(self, requested: str | None) -> str:
        """``-o`` when given, else a table for a person at a terminal and JSON for a pipe
        (never a table, nor colour, to a script)."""
        return requested or ("table" if self.stdout_isatty else "json")
