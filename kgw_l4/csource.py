"""Assemble a BPF program's C source for bcc.

bcc rewrites map method calls (``table.lookup(&key)``) only in the file it compiles,
not in headers it includes: a call in a header stays an indirect call through a
struct member and the verifier rejects it ("unknown opcode 8d"). So the loader
expands kgw's own ``#include "x.h"`` lines in place, once each (like an include guard),
with ``#line`` markers so compiler messages still name the header and line.
System includes (``<...>``) are left to the compiler.
"""

from __future__ import annotations

import re
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


def expand(path: Path, _seen: set[Path] | None = None) -> str:
    """The text of ``path`` with local includes inlined (each header at most once)."""
    seen = set() if _seen is None else _seen
    path = path.resolve()
    seen.add(path)
    out: list[str] = [f'#line 1 "{path.name}"']
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        m = _INCLUDE.match(line)
        if not m:
            out.append(line)
            continue
        inc = (path.parent / m.group(1)).resolve()
        if not inc.exists():
            raise FileNotFoundError(f"{path.name}:{lineno}: include {m.group(1)!r} not found")
        if inc not in seen:
            out.append(expand(inc, seen))
        out.append(f'#line {lineno + 1} "{path.name}"')
    return "\n".join(out) + "\n"


def program_source(name: str) -> str:
    """Expanded source of ``bpf/<name>`` (e.g. "lb_tc.c")."""
    return expand(BPF_DIR / name)
