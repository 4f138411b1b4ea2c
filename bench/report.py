"""Saving a benchmark's report without losing the ones before it.

A results file in ``bench/results/`` is a history: quiet-machine runs, before/after
figures of a change, the commands that made them. A bench that rewrote the whole file
lost that history every run (it had to be restored from git by hand). ``save`` appends the
new report as a dated section instead: its title becomes a level-2 heading with the time
of the run, and its own headings move one level down.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: The machine's load average when the bench started (this module is imported first).
LOAD_AT_START = os.getloadavg()


def as_section(text: str, when: float | None = None) -> str:
    """TEXT (a report beginning with a ``# Title`` line) as a section of a longer file."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
    out = []
    titled = False
    for line in text.splitlines():
        if line.startswith("#"):
            line = "#" + line
            if not titled:
                line = f"{line} (run of {stamp})"
                titled = True
        out.append(line)
    if not titled:
        out.insert(0, f"## Run of {stamp}\n")
    return "\n".join(out).rstrip("\n") + "\n"


def save(path: str | Path, text: str) -> None:
    """Write TEXT to PATH, or append it as a dated section when PATH already has content."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if not old.strip():
        path.write_text(text.rstrip("\n") + "\n")
        return
    path.write_text(old.rstrip("\n") + "\n\n" + as_section(text))


def load_note() -> str:
    """What the reader needs to judge timed figures: the load before the bench ran, not a
    fixed sentence that says the machine was shared whether it was or not."""
    one, five, _ = LOAD_AT_START
    return (f"Load average when the run started: {one:.2f} (1 min), {five:.2f} (5 min) on "
            f"{os.cpu_count()} CPUs; timed figures are noisy when it is above ~0.5.")
