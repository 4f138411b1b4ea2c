"""What a kgw policy can do on a TCPRoute, UDPRoute or TLSRoute (pure).

The L4 plane forwards bytes: of all the policy sections only ``healthCheck.active`` on a
TCPRoute or a TLSRoute is served there (kgw_l4.health: the endpoints are probed once per
node and a failing one loses its Maglev slots, in every L4 mode; a TLS port's picker
likewise, kgw_l4.tlspass). Everything else is said in the policy's status rather than
silently dropped:

- ``healthCheck.passive`` (outlier detection) counts HTTP answers and request failures,
  which an L4 frontend never sees;
- on a TLSRoute only a TCP probe (``active.type: TCP``): a passed-through route's
  backends speak TLS, which a plain HTTP or gRPC probe cannot talk to, and the same route
  may be served passed through on one listener and terminated on another;
- UDPRoute: a UDP backend gives no answer a generic probe can judge (no handshake, and
  silence is what a healthy one sends too), so kgw does not probe it;
- every other section is about HTTP requests or listener sockets.

A policy with nothing served on the target is Invalid there; with something served and
something not, Accepted with a note naming what is not applied.
"""

from __future__ import annotations

from typing import Any

L4_ROUTE_KINDS = ("TCPRoute", "UDPRoute", "TLSRoute")

_WHY_KIND = {
    "UDPRoute": "kgw does not probe UDP backends (no handshake: silence is what a healthy "
                "one sends too)",
}

#: The probe types each L4 route kind's backends can answer (type HTTP is the default).
PROBE_TYPES = {"TCPRoute": ("HTTP", "TCP", "GRPC"), "TLSRoute": ("TCP",)}


def probe_served(kind: str, active: dict[str, Any]) -> bool:
    """Whether an active check of this ``type`` is served on an L4 route of ``kind``."""
    return active.get("type", "HTTP") in PROBE_TYPES.get(kind, ())


def served(kind: str, sections: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(fields served, "field: why not" for those that are not) of a policy's spec on
    an L4 route of ``kind``."""
    ok: list[str] = []
    not_served: list[str] = []
    for field, value in sections.items():
        if field == "targetRefs" or value is None:
            continue
        if field != "healthCheck":
            not_served.append(f"spec.{field}: the L4 plane forwards bytes, not requests")
            continue
        value = value if isinstance(value, dict) else {}
        if kind in _WHY_KIND:
            not_served.append(f"spec.healthCheck: {_WHY_KIND[kind]}")
            continue
        active = value.get("active")
        if isinstance(active, dict) and not probe_served(kind, active):
            not_served.append(f"spec.healthCheck.active.type: {active.get('type', 'HTTP')} "
                              f"probes are not made to a {kind}'s backends, which speak TLS "
                              f"(passed through): use type TCP")
        elif active is not None:
            ok.append("spec.healthCheck.active")
        if value.get("passive") is not None:
            not_served.append("spec.healthCheck.passive: outlier detection counts HTTP "
                              "answers, which an L4 frontend never sees")
    return ok, not_served


def limits(kind: str, sections: dict[str, Any]) -> tuple[bool, str] | None:
    """None when all of the policy applies on an L4 route of ``kind``; else (False,
    why) when nothing does (Invalid there), (True, note) when part does (Accepted)."""
    ok, not_served = served(kind, sections)
    if not not_served:
        return None
    msg = f"on a {kind}: " + "; ".join(not_served)
    return bool(ok), ("not applied " if ok else "") + msg
