"""The regular expressions of route matches, compiled exactly as the router compiles them.

The dialect is Python's ``re``. Paths and header values are matched as the bytes read off
the wire (Latin-1, as the proxy decodes nothing), query parameter values as text. The
two forms do not accept the same patterns (``\\N{...}`` is text-only, a character
outside Latin-1 cannot be a byte), so the controller validates a route's patterns with
these same functions: what it accepts is what the router can compile, and a pattern it
refuses is reported with Python's error and its position.
"""

from __future__ import annotations

import re


def compile_bytes(pattern: str) -> re.Pattern[bytes]:
    """A path or header-value pattern. Raises re.error (with ``pos``)."""
    try:
        data = pattern.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise re.error(f"character {pattern[exc.start]!r} cannot be matched: paths and headers are "
                       "matched as Latin-1 bytes", pattern, exc.start) from None
    return re.compile(data)


def compile_text(pattern: str) -> re.Pattern[str]:
    """A query parameter value pattern. Raises re.error (with ``pos``)."""
    return re.compile(pattern)
