"""Rendering for the CLIs: tables for people, JSON and YAML for scripts.

JSON and YAML are stable (no colour, nothing that depends on the terminal) so that scripts
can rely on them; tables follow ``kubectl get``: upper-case headers, padded columns, no
trailing blanks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

FORMATS = ("table", "json", "yaml")


def dump(value: Any, fmt: str, *, sort_keys: bool = False) -> str:
    """``value`` as JSON or YAML text (no final newline); keys in their order unless
    ``sort_keys``."""
    if fmt == "yaml":
        return yaml.safe_dump(value, sort_keys=sort_keys, default_flow_style=False).rstrip("\n")
    if fmt == "json":
        return json.dumps(value, indent=2, sort_keys=sort_keys)
    raise ValueError(f"no such data format: {fmt!r} (json or yaml)")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, gap: int = 3) -> str:
    """Columns as wide as their widest cell, ``gap`` blanks apart (no final newline)."""
    cells = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    sep = " " * gap
    lines = [sep.join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += [sep.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)
