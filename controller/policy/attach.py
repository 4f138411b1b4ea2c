"""Pure: the kgw policies of one namespace -> what applies to each target, and why not.

Rules (GEP-713, written down in docs/policies.md and table-tested in
tests/policy/test_attach.py):

- A policy applies only in its own namespace: a targetRef naming another namespace is
  Invalid. Targets are Gateways (``sectionName``: a listener), HTTPRoutes and
  GRPCRoutes (``sectionName``: a named rule); any other kind is Invalid.
- Two policies of the same kind on the same target (same ``sectionName`` too): the
  older (creationTimestamp, then namespace/name) applies there; the newer is
  Conflicted on that target and applies nowhere else less because of it.
- Per section, the most specific target that sets it wins: route rule, then route, then
  listener, then Gateway (:func:`effective`). Sections are never mixed inside.
- A policy that fails validation (the CRD in a cluster cannot hold every rule kgw
  checks) is Invalid on all its targets, naming the field; its previous good version,
  if the caller kept one, keeps applying meanwhile.
- A section that acts before routing (``listener_only``) cannot be set on a route
  target: that target is Invalid and gets nothing from the policy.
- A SecurityPolicy that fails validation and has no previous good version fails closed:
  its targets refuse every request (``FAIL_CLOSED``) until it is fixed, rather than
  being served without the authentication it asked for.

Whether a target exists, and which Gateways are its ancestors, is the translator's to
say (it has the resolved Gateways and routes): see controller/policy/status.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.objects import GATEWAY_GROUP, Obj, ObjectKey
from controller.policy.registry import SECTIONS
from controller.schema import apply_defaults, validate
from controller.schema.errors import FieldError
from controller.schema.kgwpolicy import TARGET_KINDS
from controller.translate.util import as_dict, as_list, as_str, creation_timestamp, spec
from kgw_l7.auth_config import Authorization

#: Outcome reasons (GEP-713 PolicyConditionReason), worst last.
ACCEPTED = "Accepted"
CONFLICTED = "Conflicted"
TARGET_NOT_FOUND = "TargetNotFound"
INVALID = "Invalid"
SEVERITY = {ACCEPTED: 0, CONFLICTED: 1, TARGET_NOT_FOUND: 2, INVALID: 3}

#: Precedence levels, least specific first.
LEVELS = ("Gateway", "Listener", "Route", "RouteRule")


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """What a targetRef names, in the policy's namespace."""

    kind: str  # Gateway / HTTPRoute / GRPCRoute
    name: str
    section: str = ""  # a listener (Gateway) or a named rule (route); "" for the whole

    @property
    def level(self) -> str:
        if self.kind == "Gateway":
            return "Listener" if self.section else "Gateway"
        return "RouteRule" if self.section else "Route"

    def describe(self, namespace: str) -> str:
        what = f"{self.kind} {namespace}/{self.name}"
        if self.section:
            what += f" {'listener' if self.kind == 'Gateway' else 'rule'} {self.section!r}"
        return what


#: (section field, compiled value), in registry order.
Sections = tuple[tuple[str, Any], ...]


@dataclass(frozen=True, slots=True)
class RefOutcome:
    """One targetRef of one policy: what became of it (before existence is checked)."""

    index: int
    #: The targetRef as written (group, kind, name, sectionName, namespace) for status.
    ref: tuple[tuple[str, str], ...]
    target: Target | None  # None: the ref is Invalid (no such target can exist)
    reason: str  # ACCEPTED / CONFLICTED / INVALID
    message: str


@dataclass(frozen=True, slots=True)
class PolicyResult:
    key: ObjectKey
    generation: int
    refs: tuple[RefOutcome, ...]


@dataclass(frozen=True, slots=True)
class NamespacePolicies:
    namespace: str
    #: (target) -> the winning attachments' sections, one entry per kind that has one.
    applied: Mapping[Target, Sections]
    #: The policies valid now, defaulted: a caller keeping ``last_good`` stores these.
    valid: Mapping[ObjectKey, Obj]
    #: (target) -> the policies whose sections apply there (for messages, metrics).
    sources: Mapping[Target, tuple[ObjectKey, ...]]
    results: tuple[PolicyResult, ...]

    def at(self, target: Target) -> Sections:
        return self.applied.get(target, ())


EMPTY = NamespacePolicies("", {}, {}, {}, ())


def _ref_items(ref: dict) -> tuple[tuple[str, str], ...]:
    out = {k: as_str(ref.get(k)) for k in ("group", "kind", "name", "sectionName", "namespace")}
    return tuple((k, v) for k, v in out.items() if v or k == "group")


def _check_ref(ref: dict, i: int, namespace: str) -> tuple[Target | None, str]:
    path = f"spec.targetRefs[{i}]"
    group, kind = as_str(ref.get("group")), as_str(ref.get("kind"))
    ns = as_str(ref.get("namespace"))
    if ns and ns != namespace:
        return None, (f"{path}.namespace: a policy applies in its own namespace only "
                      f"({namespace}), not in {ns}")
    kinds = TARGET_KINDS.get(group, ())
    if kind not in kinds:
        allowed = ", ".join(f"{k} ({g})" for g, ks in TARGET_KINDS.items() for k in ks)
        return None, (f"{path}: cannot target {kind or 'a kind'} of group {group or 'core'!r}; "
                      f"targets are {allowed}")
    return Target(kind, as_str(ref.get("name")), as_str(ref.get("sectionName"))), ""


def compile_sections(kind: str, obj: Obj, scope: str, refs: Any = None) -> Sections:
    """The policy's sections, compiled for ``scope`` (the policy and one target); ``refs``
    reads the namespace's Secrets and ConfigMaps for the sections that name some."""
    s = spec(obj)
    return tuple((sec.field, sec.compile(s[sec.field], scope, refs) if sec.refs
                  else sec.compile(s[sec.field], scope))
                 for sec in SECTIONS[kind] if s.get(sec.field) is not None)


def refs_errors(kind: str, obj: Obj, lookup: Any) -> list[FieldError]:
    """What is wrong with the Secrets and ConfigMaps the policy's sections read
    (``Section.check_refs``)."""
    s = spec(obj)
    return [e for sec in SECTIONS.get(kind, ()) if sec.check_refs is not None
            and s.get(sec.field) is not None
            for e in sec.check_refs(s[sec.field], "spec." + sec.field, lookup)]


def _listener_only_fields(kind: str, obj: Obj) -> list[str]:
    s = spec(obj)
    return [sec.field for sec in SECTIONS[kind]
            if sec.listener_only and s.get(sec.field) is not None]


def resolve_namespace(namespace: str, policies: Iterable[Obj],
                      last_good: Mapping[ObjectKey, Obj] | None = None,
                      lookup: Any = None) -> NamespacePolicies:
    """Everything the policies of ``namespace`` (any kgw policy kind) do, and why not.

    ``last_good``: for a policy that fails validation now, the version that last passed
    (it keeps applying); None or absent: it applies nowhere.
    ``lookup``: reads the namespace's Secrets and ConfigMaps for the sections that name
    some (``Section.refs``; ``controller.policy.book.StoreRefs``).
    """
    # 1. Validity: which version of each policy applies, and its error if any.
    candidates: list[tuple[str, ObjectKey, Obj, Obj, str]] = []  # (created, key, shown, used, err)
    valid: dict[ObjectKey, Obj] = {}
    for raw in policies:
        key = ObjectKey.of(raw)
        obj = apply_defaults(raw)  # (a cluster's CRD may hold fewer defaults than kgw's)
        errors = validate(obj)
        if not errors and lookup is not None:
            errors = refs_errors(key.kind, obj, lookup)
        used: Obj | None = obj
        err = ""
        if not errors:
            valid[key] = obj
        else:
            e = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            err = f"{e.path}: {e.message}{more}" if e.path else f"{e.message}{more}"
            used = (last_good or {}).get(key)
        candidates.append((creation_timestamp(obj), key, obj, used or {}, err))
    candidates.sort(key=lambda c: (c[0], c[1].namespace, c[1].name))

    # 2. Targets, oldest policy first: the first of a kind on a target holds it.
    holder: dict[tuple[str, Target], ObjectKey] = {}
    applied: dict[Target, list[tuple[str, Any]]] = {}
    sources: dict[Target, list[ObjectKey]] = {}
    results: list[PolicyResult] = []
    for _created, key, shown, used, err in candidates:
        outcomes: list[RefOutcome] = []
        refs = [as_dict(r) for r in as_list(spec(shown).get("targetRefs"))]
        used_refs = [as_dict(r) for r in as_list(spec(used).get("targetRefs"))] if used else []
        if err:
            # Shown: the refs as written now (Invalid); applied: the last good version's.
            closed = key.kind in FAIL_CLOSED and not used
            for i, ref in enumerate(refs):
                target, why = _check_ref(ref, i, key.namespace)
                outcomes.append(RefOutcome(i, _ref_items(ref), target, INVALID,
                                           f"{err}" + ("; the previous version keeps applying"
                                                       if used else "") +
                                           ("; until it is fixed, every request to its "
                                            "target is refused (403)" if closed else "")))
                if closed and target is not None and (key.kind, target) not in holder:
                    # A broken security policy must not leave its target open.
                    holder[(key.kind, target)] = key
                    applied.setdefault(target, []).extend(FAIL_CLOSED[key.kind])
                    sources.setdefault(target, []).append(key)
        for i, ref in enumerate(used_refs if used else []):
            target, why = _check_ref(ref, i, key.namespace)
            if target is None:
                if not err:
                    outcomes.append(RefOutcome(i, _ref_items(ref), None, INVALID, why))
                continue
            if target.kind != "Gateway":
                early = _listener_only_fields(key.kind, used)
                if early:
                    if not err:
                        outcomes.append(RefOutcome(
                            i, _ref_items(ref), target, INVALID,
                            f"spec.{early[0]}: applies to connections before any route is "
                            f"chosen, so only a Gateway or a listener can set it, not a "
                            f"{target.kind}"))
                    continue
            slot = (key.kind, target)
            winner = holder.get(slot)
            if winner is not None:
                if not err:
                    outcomes.append(RefOutcome(
                        i, _ref_items(ref), target, CONFLICTED,
                        f"{winner.kind} {winner.namespace}/{winner.name} is older and targets "
                        f"{target.describe(key.namespace)} too: it applies there, this one "
                        f"does not"))
                continue
            holder[slot] = key
            scope = f"{key.kind} {key.namespace}/{key.name} on {target.describe(key.namespace)}"
            applied.setdefault(target, []).extend(compile_sections(key.kind, used, scope,
                                                                       lookup))
            sources.setdefault(target, []).append(key)
            if not err:
                outcomes.append(RefOutcome(i, _ref_items(ref), target, ACCEPTED,
                                           "the policy applies"))
        outcomes.sort(key=lambda o: o.index)
        results.append(PolicyResult(key, _generation(shown), tuple(outcomes)))
    results.sort(key=lambda r: r.key)
    return NamespacePolicies(namespace, {t: tuple(s) for t, s in applied.items()}, valid,
                             {t: tuple(k) for t, k in sources.items()}, tuple(results))


#: Kinds whose invalid policy (with no previous good version) refuses every request to
#: its targets rather than applying nowhere, and the sections that do it.
FAIL_CLOSED: dict[str, Sections] = {
    "SecurityPolicy": (("authorization", Authorization(rules=(), default_action="Deny")),),
}


def _generation(obj: Obj) -> int:
    g = as_dict(obj.get("metadata")).get("generation")
    return g if isinstance(g, int) and not isinstance(g, bool) else 1


def effective(layers: Sequence[Sections]) -> dict[str, Any]:
    """Merge by precedence: ``layers`` least specific first; per section field, the last
    layer that sets it wins."""
    out: dict[str, Any] = {}
    for layer in layers:
        for field, value in layer:
            out[field] = value
    return out


__all__ = ["ACCEPTED", "CONFLICTED", "EMPTY", "GATEWAY_GROUP", "INVALID", "LEVELS",
           "NamespacePolicies", "PolicyResult", "RefOutcome", "SEVERITY", "TARGET_NOT_FOUND",
           "Target", "effective", "resolve_namespace"]
