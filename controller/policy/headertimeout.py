"""TrafficPolicy ``requestHeaderTimeout``: how long a client may take to send a request
head (slowloris), per listener.

The timer runs before any route is known, so only a Gateway or one of its listeners can
set it (a route target is reported Invalid). Several Gateway listeners bound to one
socket share its connections: the shortest of their timeouts applies there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from controller.duration import is_duration, parse_duration
from controller.policy.section import Section
from controller.schema.common import DURATION
from controller.schema.errors import FieldError


def _positive(value: str, path: str) -> Iterable[FieldError]:
    if is_duration(value) and parse_duration(value) <= 0:
        yield FieldError(path, f"must be longer than 0s (is {value!r})")


SCHEMA = dataclasses.replace(DURATION, rules=(_positive,))


def compile_timeout(value: str, scope: str) -> float:
    return parse_duration(value)


SECTION = Section("requestHeaderTimeout", SCHEMA, compile_timeout, "request_header_timeout",
                  listener_only=True, combine=min)
