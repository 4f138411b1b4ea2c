"""BackendTLSPolicy: TLS from the proxy to a Service, and the policy's own conditions.

A policy targets Services (optionally one port, by sectionName). When several target
the same Service port, the oldest wins (then namespace/name order) and the others are
Accepted=False Conflicted; a policy naming a sectionName beats one that does not for
that port.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.objects import Obj, ObjectKey
from controller.translate import conditions as c
from controller.translate.ir import Cond
from controller.translate.reader import Reader
from controller.translate.tlscert import check_ca_bundle
from controller.translate.util import (
    as_dict, as_list, as_str, creation_timestamp, ref_group, spec,
)
from kgw_l7 import config as l7


@dataclass(frozen=True, slots=True)
class PolicyResult:
    key: ObjectKey
    #: None when the policy is unusable (the backend then answers 500).
    tls: l7.UpstreamTLS | None
    resolved_refs: Cond
    accepted: Cond


def targets(policy: Obj) -> list[tuple[str, str | None]]:
    """(service name, sectionName) pairs the policy targets."""
    out = []
    for t in map(as_dict, as_list(spec(policy).get("targetRefs"))):
        if ref_group(t, "") == "" and as_str(t.get("kind")) == "Service" and as_str(t.get("name")):
            out.append((as_str(t.get("name")), as_str(t.get("sectionName")) or None))
    return out


def evaluate(reader: Reader, policy: Obj) -> PolicyResult:
    key = ObjectKey.of(policy)
    v = as_dict(spec(policy).get("validation"))
    host = as_str(v.get("hostname")).lower()
    sans = []
    for san in map(as_dict, as_list(v.get("subjectAltNames"))):
        value = as_str(san.get("hostname")) or as_str(san.get("uri"))
        if value:
            sans.append(value)
    pems: list[str] = []
    problem: Cond | None = None
    refs = as_list(v.get("caCertificateRefs"))
    for ref in map(as_dict, refs):
        group, kind, name = ref_group(ref, ""), as_str(ref.get("kind")), as_str(ref.get("name"))
        if group != "" or kind != "ConfigMap":
            problem = problem or Cond(c.RESOLVED_REFS, False, c.R_INVALID_KIND,
                                      f"caCertificateRef {group or 'core'}/{kind} is not a "
                                      "ConfigMap")
            continue
        cm = reader.get("ConfigMap", key.namespace, name)
        pem = as_str(as_dict(cm.get("data")).get("ca.crt")) if cm is not None else ""
        why = (f"ConfigMap {name} not found" if cm is None
               else "ConfigMap has no ca.crt" if not pem else check_ca_bundle(pem))
        if why:
            problem = problem or Cond(c.RESOLVED_REFS, False, c.R_INVALID_CA_CERTIFICATE_REF,
                                      f"caCertificateRef {name}: {why}")
            continue
        pems.append(pem)
    well_known = as_str(v.get("wellKnownCACertificates"))
    if not refs and well_known != "System":
        problem = problem or Cond(c.RESOLVED_REFS, False, c.R_INVALID_CA_CERTIFICATE_REF,
                                  "neither caCertificateRefs nor wellKnownCACertificates: System")
    options = as_dict(spec(policy).get("options"))
    if options:  # kgw defines none: applying the policy without them would be a lie
        return PolicyResult(key, None,
                            problem or Cond(c.RESOLVED_REFS, True, c.R_RESOLVED_REFS, ""), Cond(
 c.ACCEPTED, False, c.R_INVALID, "options: kgw defines no BackendTLSPolicy options ("
 + ", ".join(sorted(map(str, options))) + "); requests to the Service port are answered 500"))
    if not host:
        accepted = Cond(c.ACCEPTED, False, c.R_INVALID, "validation.hostname is required")
        return PolicyResult(key, None,
                            problem or Cond(c.RESOLVED_REFS, True, c.R_RESOLVED_REFS, ""), accepted)
    if problem is not None:
        return PolicyResult(key, None, problem,
                            Cond(c.ACCEPTED, False, c.R_NO_VALID_CA_CERTIFICATE, problem.message))
    tls = l7.UpstreamTLS(hostname=host,
                         ca_pem="".join(p if p.endswith("\n") else p + "\n" for p in pems),
                         subject_alt_names=tuple(sans))
    return PolicyResult(key, tls,
                        Cond(c.RESOLVED_REFS, True, c.R_RESOLVED_REFS, "references resolved"),
                        Cond(c.ACCEPTED, True, c.R_ACCEPTED, "policy accepted"))


def winners(policies: list[Obj], service: str) -> dict[str | None, Obj]:
    """sectionName (None = whole Service) -> the policy that applies to it."""
    best: dict[str | None, Obj] = {}
    for p in sorted(policies, key=lambda p: (creation_timestamp(p), ObjectKey.of(p))):
        for svc, section in targets(p):
            if svc == service and section not in best:
                best[section] = p
    return best


def for_service_port(reader: Reader, namespace: str, service: str,
                     port_name: str) -> PolicyResult | None:
    """The policy (evaluated) that applies to one Service port, if any."""
    policies = reader.backend_tls_policies(namespace)
    if not policies:
        return None
    best = winners(policies, service)
    p = best.get(port_name) if port_name else None
    p = p or best.get(None)
    return evaluate(reader, p) if p is not None else None


def conflicted(policies: list[Obj]) -> set[ObjectKey]:
    """Policies that lose every target they name to another policy."""
    by_svc: dict[str, list[Obj]] = {}
    for p in policies:
        for svc, _ in targets(p):
            by_svc.setdefault(svc, []).append(p)
    winning: set[ObjectKey] = set()
    for svc, ps in by_svc.items():
        winning |= {ObjectKey.of(p) for p in winners(ps, svc).values()}
    return {ObjectKey.of(p) for p in policies if targets(p)} - winning
