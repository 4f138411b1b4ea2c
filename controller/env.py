"""What a CLI command may touch: its streams, and how it exits."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass, field
from typing import TextIO


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
