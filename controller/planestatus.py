"""What the data planes could not do, folded into Gateway listener status.

Translation decides what *should* be served and cannot know that a port is taken by
another process or that the kernel refused a frontend; the data planes find that out
when they apply the configuration. Those failures become the affected listeners'
``Programmed=False`` (reason ``Invalid``, the data plane's message), and the Gateway's own
``Programmed`` condition turns False when none of its listeners is programmed — so
``kgw status`` and the Kubernetes API show the problem where a user looks for it.

The same goes for what a policy points at and only serving can find broken: a global rate
limit's Redis that does not resolve or refuses, a remote JWKS URL that fails, an external
authorization service that does not answer (kgw_l7.problems). The policy stays
``Accepted`` (its configuration is valid and applies), and each of its accepted ancestors
gets ``ResolvedRefs=False`` (reason ``Unreachable``, the field, the address and the
error) until the data plane reports it working again.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from controller.objects import ObjectKey, Obj
from kgw_l4.config import L4Config
from kgw_l7.config import L7Config
from kgw_l7.problems import Key

POLICY_KINDS = ("TrafficPolicy", "SecurityPolicy")
#: The condition a runtime problem sets on a policy's ancestor.
UNREACHABLE = "Unreachable"

WILDCARDS = ("0.0.0.0", "::")


def _listener_failures(gateway: Obj, status: Mapping[str, Any], l7: L7Config,
                       l7_errors: Mapping[str, str],
                       l4_errors: Mapping[str, str], key: ObjectKey) -> dict[str, str]:
    """Gateway listener name -> why its data plane could not serve it."""
    out: dict[str, str] = {}
    spec = gateway.get("spec") or {}
    has_addresses = bool(spec.get("addresses"))
    addresses = {a.get("value") for a in status.get("addresses") or [] if isinstance(a, dict)}
    failed_binds = {(lst.address, lst.port): l7_errors[lst.name] for lst in l7.listeners
                    if lst.name in l7_errors}
    for listener in spec.get("listeners") or []:
        if not isinstance(listener, dict):
            continue
        name = listener.get("name")
        msg = l4_errors.get(f"{key.namespace}/{key.name}/{name}")
        if msg is None:
            for (address, port), error in failed_binds.items():
                if port == listener.get("port") and (
                        address in addresses or (address in WILDCARDS and not has_addresses)):
                    msg = error
                    break
        if msg is not None and isinstance(name, str):
            out[name] = msg
    return out


def l4_listener_failures(l4: L4Config, l4_errors: Mapping[str, str]) -> dict[str, str]:
    """The kernel plane's errors that are listener failures: those of frontends with at
    least one endpoint (see ``overlay``). Keys are ``namespace/gateway/listener``."""
    empty = {f.name for f in l4.frontends if not any(g.endpoints for g in f.backends)}
    return {name: msg for name, msg in l4_errors.items() if name not in empty}


def policy_uses(kind: str, obj: Obj) -> list[tuple[Key, str]]:
    """What a policy names that only serving can find broken: ((kind, name) as
    kgw_l7.problems keys them, the field naming it)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    namespace = (obj.get("metadata") or {}).get("namespace") or "default"
    out: list[tuple[Key, str]] = []
    if kind == "TrafficPolicy":
        redis = _path(spec, "rateLimit", "global", "redis")
        if isinstance(redis, dict) and isinstance(redis.get("address"), str):
            out.append((("redis", redis["address"]), "spec.rateLimit.global.redis.address"))
    elif kind == "SecurityPolicy":
        providers = _path(spec, "jwt", "providers")
        for i, p in enumerate(providers if isinstance(providers, list) else []):
            uri = _path(p, "remoteJWKS", "uri")
            if isinstance(uri, str):
                out.append((("jwks", uri), f"spec.jwt.providers[{i}].remoteJWKS.uri"))
        ref = _path(spec, "extAuth", "backendRef")
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            label = f"{ref.get('namespace') or namespace}/{ref['name']}"
            if ref.get("port") is not None:
                label += f":{ref['port']}"
            out.append((("extauth", label), "spec.extAuth.backendRef"))
    return out


def _path(value: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _policy_problems(obj: Obj, kind: str, problems: Mapping[Key, str]) -> list[str]:
    return [f"{field} {key[1]}: {problems[key]}" for key, field in policy_uses(kind, obj)
            if key in problems]


def _overlay_policy(status: dict[str, Any], messages: list[str], generation: int
                    ) -> dict[str, Any]:
    new = copy.deepcopy(status)
    message = "; ".join(messages)
    for ancestor in new.get("ancestors") or []:
        conds = ancestor.setdefault("conditions", [])
        if any(c.get("type") == "Accepted" and c.get("status") == "True" for c in conds):
            _set(conds, "ResolvedRefs", "False", UNREACHABLE, message, generation)
    return new


def overlay(statuses: Mapping[ObjectKey, dict[str, Any]], lookup: Any, l7: L7Config, l4: L4Config,
            l7_errors: Mapping[str, str], l4_errors: Mapping[str, str],
            l7_problems: Mapping[Key, str] | None = None) -> dict[ObjectKey, dict[str, Any]]:
    """Return ``statuses`` with data-plane failures applied (inputs are not modified).

    A frontend without any endpoint is not a listener failure: its route's backend refs
    did not resolve (or have no ready endpoint), which the route's own status reports,
    and Gateway API wants the listener Programmed while its connections are refused.
    """
    l4_errors = l4_listener_failures(l4, l4_errors)
    if not l7_errors and not l4_errors and not l7_problems:
        return dict(statuses)
    out = dict(statuses)
    for key, status in statuses.items():
        if l7_problems and key.kind in POLICY_KINDS:
            policy = lookup(key)
            messages = _policy_problems(policy, key.kind, l7_problems) if policy else []
            if messages:
                generation = (policy.get("metadata") or {}).get("generation", 1)
                out[key] = _overlay_policy(status, messages, generation)
            continue
        if key.kind != "Gateway":
            continue
        gateway = lookup(key)
        if gateway is None:
            continue
        failures = _listener_failures(gateway, status, l7, l7_errors, l4_errors, key)
        if not failures:
            continue
        new = copy.deepcopy(status)
        generation = (gateway.get("metadata") or {}).get("generation", 1)
        programmed_left = 0
        for listener in new.get("listeners") or []:
            msg = failures.get(listener.get("name"))
            conds = listener.setdefault("conditions", [])
            if msg is not None:
                _set(conds, "Programmed", "False", "Invalid", msg, generation)
            elif any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conds):
                programmed_left += 1
        if programmed_left == 0:
            _set(new.setdefault("conditions", []), "Programmed", "False", "Invalid",
                 "no listener could be programmed: " + "; ".join(sorted(set(failures.values()))),
                 generation)
        out[key] = new
    return out


def _set(conds: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
         generation: int) -> None:
    new = {"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": generation}
    for i, c in enumerate(conds):
        if c.get("type") == type_:
            conds[i] = new
            return
    conds.append(new)
