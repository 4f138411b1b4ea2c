"""Gateway API match precedence, in one place (spec: HTTPRouteRule, GRPCRouteRule).

Within one virtual host, across every route attached there, an HTTPRoute match comes
first when it has, in order, continuing on ties:

1. an Exact path match, then a RegularExpression one (implementation-specific: kgw puts
   regexes between exact and prefix matches, like Envoy Gateway), then PathPrefix;
2. the longer path value (characters);
3. a method match;
4. more header matches;
5. more query-parameter matches;
6. the older route (creationTimestamp), then "namespace/name" alphabetically;
7. the earlier rule in the route, then the earlier match in the rule.

A GRPCRoute match (``grpc_match_key``: the spec ranks its method match by characters,
not by the path kgw compiles it to) when it has, in order: more characters in its
service, more in its method, more header matches; then 6 and 7 as above. GRPCRoute and
HTTPRoute matches in one virtual host are not merged by the spec (each route kind
should have its own hostnames); kgw ranks a GRPCRoute match with HTTPRoute's Exact paths.

Hostname specificity is not here: virtual hosts already separate hostnames.
"""

from __future__ import annotations

from kgw_l7.config import RouteMatch

_PATH_RANK = {"Exact": 0, "RegularExpression": 1, "PathPrefix": 2}


def match_key(m: RouteMatch) -> tuple[int, int, int, int, int]:
    return (
        _PATH_RANK.get(m.path.type, 3),
        -len(m.path.value),
        0 if m.method else 1,
        -len(m.headers),
        -len(m.query_params),
    )


def grpc_match_key(service: str, method: str, headers: int) -> tuple[int, int, int, int, int]:
    """A GRPCRoute match's rank (the same shape as ``match_key``'s)."""
    return (0, -len(service), -len(method), -headers, 0)


def sort_key(
    m: RouteMatch, created: str, namespace: str, name: str, rule_index: int, match_index: int,
    key: tuple[int, int, int, int, int] | None = None,
) -> tuple:
    """``key``: the match's own rank when it is not ``match_key(m)`` (GRPCRoute)."""
    return (*(key or match_key(m)), created, namespace, name, rule_index, match_index)
