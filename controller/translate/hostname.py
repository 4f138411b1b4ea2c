"""Hostname matching and intersection, exactly as the Gateway API spec words them.

A listener hostname and a route hostname are each either absent (matches anything), an
exact name, or a wildcard "*.suffix" (one or more labels in front of the suffix). The
intersection is the more specific of the two when one contains the other.
"""

from __future__ import annotations


def normalize(h: str) -> str:
    return h.strip().lower().rstrip(".")


def wildcard_matches(pattern: str, host: str) -> bool:
    """``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not ``example.com``."""
    return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1


def covers(pattern: str | None, host: str) -> bool:
    """Does the listener-style ``pattern`` (None = any) accept every name ``host`` stands for?"""
    if pattern is None or pattern == "*":
        return True
    if pattern.startswith("*."):
        if host.startswith("*."):
            return host == pattern or wildcard_matches(pattern, host[2:])
        return wildcard_matches(pattern, host)
    return pattern == host


def intersect(listener: str | None, route: str) -> str | None:
    """The hostname both accept, or None if they share no name."""
    if listener is None or listener == "*":
        return route
    if covers(listener, route):
        return route
    if covers(route, listener):
        return listener
    return None


def intersect_all(listener: str | None, route_hostnames: list[str]) -> list[str]:
    """Effective hostnames of a route on a listener; [] means "no intersection".

    A route without hostnames takes the listener's (or "*" when the listener has none).
    """
    if not route_hostnames:
        return [listener or "*"]
    out = {h for r in route_hostnames if (h := intersect(listener, r)) is not None}
    return sorted(out)


def specificity(pattern: str | None) -> tuple[int, int]:
    """Sort key: larger is more specific (exact > longer wildcard > none)."""
    if pattern is None or pattern == "*":
        return (0, 0)
    if pattern.startswith("*."):
        return (1, len(pattern))
    return (2, len(pattern))
