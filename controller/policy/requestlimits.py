"""TrafficPolicy ``requestLimits``: how large a request a route accepts.

``maxRequestBodySize`` (bytes, or a Kubernetes quantity such as "1Mi"): a larger body is
answered 413. A declared Content-Length over it is refused before anything is forwarded;
a chunked (or HTTP/2) body is counted while it streams, and refused as soon as it
crosses the limit (413 if the response has not started, else the exchange is cut).
``maxRequestHeaders``: a request with more header fields is answered 431.

(The proxy's own parser limits, 100 fields and 64 KiB per head, apply first and to
every request; these are per route and can only be stricter.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from controller.policy.section import Section
from controller.schema.errors import FieldError
from controller.schema.nodes import Int, IntOrStr, obj
from kgw_l7.config import RequestLimits

#: Quantities as Kubernetes writes them (resource.Quantity), without fractions.
_QUANTITY_RE = re.compile(r"([0-9]{1,15})(Ki|Mi|Gi|k|M|G)?")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
#: The largest body size that can be asked for (1 TiB: larger means no limit).
MAX_BODY_SIZE = 2**40


def parse_size(value: Any) -> int | None:
    """Bytes from an integer or a quantity string ("512Ki", "1M"); None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _QUANTITY_RE.fullmatch(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2)]
    return None


def _size_rule(value: Any, path: str) -> Iterable[FieldError]:
    n = parse_size(value)
    if n is None:
        yield FieldError(path, f"invalid size {value!r}: must be a number of bytes or a quantity "
                               "such as '512Ki', '10Mi' or '1G'")
    elif n < 1 or n > MAX_BODY_SIZE:
        yield FieldError(path, f"must be between 1 byte and 1Ti (is {n} bytes)")


def _at_least_one(value: dict, path: str) -> Iterable[FieldError]:
    if not value:
        yield FieldError(path, "must set maxRequestBodySize or maxRequestHeaders")


SCHEMA = obj({
    "maxRequestBodySize": IntOrStr(rules=(_size_rule,)),
    "maxRequestHeaders": Int(1, 100),
}, rules=[_at_least_one])


def compile_limits(value: dict, scope: str) -> RequestLimits:
    size = value.get("maxRequestBodySize")
    return RequestLimits(max_body_size=parse_size(size) if size is not None else None,
                         max_headers=value.get("maxRequestHeaders"))


SECTION = Section("requestLimits", SCHEMA, compile_limits, "request_limits")
