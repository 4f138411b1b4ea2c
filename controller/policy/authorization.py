"""SecurityPolicy ``authorization``: allow/deny rules evaluated after authentication
(Envoy Gateway's fields, plus ``operation.paths``).

::

    authorization:
      defaultAction: Deny                  # the default: as soon as rules exist, deny
      rules:
      - name: office
        action: Allow
        principal:
          clientCIDRs: [10.0.0.0/8]
          jwt: {scopes: [admin], claims: [{name: role, values: [admin]}]}
          headers: [{name: x-team, values: [blue]}]
        operation: {methods: [GET], paths: [/admin]}

The first rule whose every condition holds decides; none: ``defaultAction``.
"""

from __future__ import annotations

from controller.policy import authcommon as ac
from controller.policy.section import Section
from controller.schema.nodes import ListOf, Str, obj
from kgw_l7.auth_config import Authorization, AuthorizationRule, HeaderRequirement

ACTION = Str(enum=("Allow", "Deny"))
METHOD = Str(enum=("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                   "PATCH"))

RULE = obj({
    "name": Str(min_len=1, max_len=253),
    "action": ACTION,
    "principal": obj({
        "clientCIDRs": ListOf(Str(rules=(ac.cidr_rule,)), max_items=64),
        "jwt": obj({"provider": Str(max_len=253),
                    "scopes": ListOf(Str(min_len=1, max_len=256), max_items=16),
                    "claims": ListOf(ac.CLAIM, max_items=16)}),
        "headers": ListOf(obj({"name": ac.HEADER_NAME,
                               "values": ListOf(Str(max_len=4096), max_items=32)},
                              required=["name"]), max_items=16),
    }),
    "operation": obj({
        "methods": ListOf(METHOD, max_items=9),
        "paths": ListOf(Str(min_len=1, max_len=1024, pattern=r"^/",
                            pattern_hint="a path starting with /"), max_items=32),
    }),
}, required=["name", "action"])

SCHEMA = obj({
    "defaultAction": ACTION,
    "rules": ListOf(RULE, max_items=64, map_keys=("name",)),
})


def compile_authorization(value: dict, scope: str, refs: ac.Refs | None = None
                          ) -> Authorization:
    rules = []
    for r in value.get("rules") or ():
        pr = r.get("principal") or {}
        jwt = pr.get("jwt") or {}
        op = r.get("operation") or {}
        rules.append(AuthorizationRule(
            name=r["name"], action=r["action"],
            client_cidrs=tuple(pr.get("clientCIDRs") or ()),
            claims=ac.claims(jwt.get("claims")), scopes=tuple(jwt.get("scopes") or ()),
            headers=tuple(HeaderRequirement(h["name"].lower(), tuple(h.get("values") or ()))
                          for h in pr.get("headers") or ()),
            methods=tuple(op.get("methods") or ()), paths=tuple(op.get("paths") or ())))
    return Authorization(tuple(rules), value.get("defaultAction", "Deny"))


SECTION = Section("authorization", SCHEMA, compile_authorization, "authorization")
