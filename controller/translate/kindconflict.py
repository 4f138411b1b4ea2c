"""The HTTPRoute/GRPCRoute hostname rule of the GRPCRoute spec (GRPCRouteSpec.Hostnames):
an HTTPRoute and a GRPCRoute attached to one listener whose hostnames intersect cannot
both be served there; exactly one is accepted, the oldest by creation timestamp, then
the first by "{namespace}/{name}".

``losers`` decides, listener by listener, which routes give way; ``without`` makes the
result of a route that gave way on some listeners: its contributions to those listeners
dropped, and a parentRef left with no listener not accepted (reason HostnameConflict,
naming the route that won). A parentRef still served on another listener stays
accepted (its status must not say it is not served). Pure functions: the translator
calls them after every change, for the listeners that carry both kinds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from controller.objects import ObjectKey
from controller.translate import conditions as c
from controller.translate import hostname as hn
from controller.translate.ir import Cond, RouteResult

KINDS = ("HTTPRoute", "GRPCRoute")

#: A listener's id (``ListenerIR.id``).
ListenerId = tuple[ObjectKey, str]


def _intersect(a: Iterable[str], b: Iterable[str]) -> bool:
    """Do two routes' effective hostnames on a listener share a name?"""
    return any(hn.intersect(x, y) is not None for x in a for y in b)


def losers(routes: Mapping[ObjectKey, RouteResult], created: Mapping[ObjectKey, str],
           listeners: Iterable[ListenerId]) -> dict[ObjectKey, dict[ListenerId, ObjectKey]]:
    """route -> {listener: the route of the other kind it gave way to}, for ``listeners``.

    On each listener the routes are taken oldest first; one is accepted unless its
    hostnames intersect those of an already accepted route of the other kind."""
    wanted = set(listeners)
    on: dict[ListenerId, list[tuple[str, str, ObjectKey, tuple[str, ...]]]] = {}
    for rk, res in routes.items():
        if rk.kind not in KINDS:
            continue
        for p in res.parents:
            for lis, hosts in p.listeners:
                if lis.id in wanted:
                    on.setdefault(lis.id, []).append(
                        (created.get(rk, "~"), f"{rk.namespace}/{rk.name}", rk, hosts))
    out: dict[ObjectKey, dict[ListenerId, ObjectKey]] = {}
    for lid, entries in on.items():
        kept: list[tuple[ObjectKey, tuple[str, ...]]] = []
        seen: set[ObjectKey] = set()
        for _, _, rk, hosts in sorted(entries, key=lambda e: (e[0], e[1], e[2].kind)):
            if rk in seen:
                continue  # (attached through several parentRefs: one decision)
            seen.add(rk)
            winner = next((k for k, h in kept if k.kind != rk.kind and _intersect(h, hosts)),
                          None)
            if winner is None:
                kept.append((rk, hosts))
            else:
                out.setdefault(rk, {})[lid] = winner
    return out


def without(res: RouteResult, lost: Mapping[ListenerId, ObjectKey]) -> RouteResult:
    """``res`` without the listeners it gave way on (see the module docstring)."""
    parents = []
    for p in res.parents:
        keep = tuple((lis, h) for lis, h in p.listeners if lis.id not in lost)
        if len(keep) == len(p.listeners):
            parents.append(p)
            continue
        if keep or not p.accepted.ok:
            parents.append(dataclasses.replace(p, listeners=keep))
            continue
        why = "; ".join(
            f"on listener {lid[1]} of {lid[0].namespace}/{lid[0].name} the {w.kind} "
            f"{w.namespace}/{w.name} shares a hostname and is older (or first by name)"
            for lid, w in sorted(lost.items()) if any(lis.id == lid for lis, _ in p.listeners))
        parents.append(dataclasses.replace(p, listeners=(), accepted=Cond(
            c.ACCEPTED, False, c.R_HOSTNAME_CONFLICT,
            f"an HTTPRoute and a GRPCRoute cannot share a hostname on a listener: {why}")))
    l7 = tuple(x for x in res.l7 if x.listener.id not in lost)
    return dataclasses.replace(res, parents=tuple(parents), l7=l7)
