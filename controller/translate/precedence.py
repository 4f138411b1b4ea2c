"""Gateway API match precedence, in one place (spec: HTTPRouteRule, GRPCRouteRule).

Within one virtual host, across every route attached there, a match comes first when it
has, in order, continuing on ties:

1. an Exact path match, then a RegularExpression one (implementation-specific: kgw puts
   regexes between exact and prefix matches, like Envoy Gateway), then PathPrefix;
2. the longer path value (characters);
3. a method match;
4. more header matches;
5. more query-parameter matches;
6. the older route (creationTimestamp), then "namespace/name" alphabetically;
7. the earlier rule in the route, then the earlier match in the rule.

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


def sort_key(
    m: RouteMatch, created: str, namespace: str, name: str, rule_index: int, match_index: int
) -> tuple:
    return (*match_key(m), created, namespace, name, rule_index, match_index)
