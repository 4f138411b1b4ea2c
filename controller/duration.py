"""Gateway API durations (GEP-2257): the one string format every timeout field uses.

The format is a strict subset of Go's ``time.ParseDuration``: one to four
``<1-5 digits><unit>`` groups with units ``h``, ``m``, ``s`` or ``ms`` ("1h30m",
"500ms", "0s"). Validation and translation both read it, so it is parsed here once.
"""

from __future__ import annotations

import re

#: The CRD's own pattern for the Duration type.
DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"

_DURATION_RE = re.compile(r"([0-9]{1,5}(h|m|s|ms)){1,4}")
_GROUP_RE = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def is_duration(s: object) -> bool:
    """True if ``s`` is a string in Gateway API duration format."""
    return isinstance(s, str) and _DURATION_RE.fullmatch(s) is not None


def parse_duration(s: str) -> float:
    """"1h30m" -> 5400.0 seconds. Raises ValueError for anything not in GEP-2257 format.

    Repeated units add up, as in Go ("1s1s" is 2 s); the pattern allows it.
    """
    if not is_duration(s):
        raise ValueError(
            f"invalid duration {s!r}: must match {DURATION_PATTERN} (e.g. '10s', '1m30s', '500ms')")
    # `ms` is tried before `m` so "5ms" is not read as 5 minutes followed by "s".
    return sum(int(num) * _UNIT_SECONDS[unit] for num, unit in _GROUP_RE.findall(s))
