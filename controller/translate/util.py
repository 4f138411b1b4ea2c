"""Small readers for Gateway API fields, applying CRD defaults to whatever is missing.

Objects from the file source are already defaulted, but translation must not depend on
it: every reader here treats an absent or malformed optional field as its default, and
never raises.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from controller import duration
from controller.objects import GATEWAY_GROUP, Obj, generation



def meta(obj: Obj) -> dict:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def spec(obj: Obj) -> dict:
    s = obj.get("spec")
    return s if isinstance(s, dict) else {}


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def as_str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def as_int(value: Any, default: int | None = None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return default


def gen(obj: Obj) -> int:
    try:
        return generation(obj)
    except (TypeError, ValueError):
        return 1


def ref_group(ref: dict, default: str = GATEWAY_GROUP) -> str:
    """A reference's group; ``None``/absent is the default, "core" is the core group."""
    g = ref.get("group", default)
    if g is None:
        return default
    g = as_str(g)
    return "" if g == "core" else g


def parse_duration(value: Any) -> float | None:
    """Gateway API Duration ("1h2m3s", "500ms") in seconds; None if absent or invalid.

    "0s" means "no timeout" in Gateway API; it is returned as 0.0 and the caller maps
    it to None.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        return duration.parse_duration(value)
    except ValueError:
        return None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def creation_timestamp(obj: Obj) -> str:
    """RFC 3339 text sorts chronologically; a missing timestamp sorts last."""
    ts = meta(obj).get("creationTimestamp")
    if ts is None:
        return "~"
    return str(ts)
