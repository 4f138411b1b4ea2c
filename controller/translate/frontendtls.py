"""Gateway ``spec.tls.frontend`` -> client certificate validation of HTTPS listeners.

Gateway API sets validation per *port*, not per listener (GEP-91: HTTP/2 connection
coalescing would let a per-hostname setting be bypassed): the ``perPort`` entry for a
port replaces ``default`` for every HTTPS listener on that port. Nothing else is
affected: an HTTP listener keeps serving even when it shares a port with a ``perPort``
entry or when ``default`` is broken.

Problems are reported on every HTTPS listener of the port, with the spec's reasons:
ResolvedRefs=False with InvalidCACertificateRef (missing object, no ``ca.crt``, bad
PEM), InvalidCACertificateKind (not a core ConfigMap or Secret) or RefNotPermitted
(another namespace, no ReferenceGrant). When no reference is usable the listener also
gets Accepted=False NoValidCACertificate and is not served: serving it without the
validation it asks for would let in clients it meant to refuse. A port with at least one
usable CA is served with those.

Any HTTPS listener under ``AllowInsecureFallback`` gives the Gateway the condition
InsecureFrontendValidationMode=True (reason ConfigurationChanged), as the spec asks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from controller.objects import GATEWAY_GROUP, ObjectKey
from controller.translate import conditions as c
from controller.translate import refgrant
from controller.translate.ir import Cond, ListenerIR
from controller.translate.reader import Reader
from controller.translate.tlscert import check_ca_bundle, secret_value
from controller.translate.util import as_dict, as_int, as_list, as_str, ref_group
from kgw_l7 import config as l7

MODES = ("AllowValidOnly", "AllowInsecureFallback")
#: Kinds a caCertificateRef may name (core group): the spec's ConfigMap, and Secret.
CA_KINDS = ("ConfigMap", "Secret")
CA_KEY = "ca.crt"


@dataclass(frozen=True, slots=True)
class PortValidation:
    """The validation an HTTPS port gets, with what went wrong resolving it."""

    #: The mode asked for (one of MODES, or the unsupported value as written).
    mode: str
    #: What the proxy enforces; None when no CA is usable (or the mode is unsupported).
    validation: l7.ClientValidation | None
    #: ResolvedRefs=False for the port's HTTPS listeners, if any reference is bad.
    refs_problem: Cond | None = None
    #: Accepted=False for the port's HTTPS listeners (no usable CA, unsupported mode).
    accepted_problem: Cond | None = None


def raw_validation(frontend: dict, port: int) -> dict | None:
    """The ``validation`` stanza that applies to ``port``: its ``perPort`` entry's (even
    if that entry has none: the entry replaces the default), else the default's."""
    for entry in map(as_dict, as_list(frontend.get("perPort"))):
        if as_int(entry.get("port")) == port:
            return as_dict(as_dict(entry.get("tls")).get("validation")) or None
    return as_dict(as_dict(frontend.get("default")).get("validation")) or None


def resolve_ca_ref(reader: Reader, gw: ObjectKey, ref: dict) -> tuple[str | None, Cond | None]:
    """One caCertificateRef -> (PEM bundle, None) or (None, ResolvedRefs=False)."""
    group, kind = ref_group(ref, ""), as_str(ref.get("kind"))
    name = as_str(ref.get("name"))
    ns = as_str(ref.get("namespace")) or gw.namespace
    where = f"{kind} {ns}/{name}"
    if group != "" or kind not in CA_KINDS:
        return None, Cond(c.RESOLVED_REFS, False, c.R_INVALID_CA_CERTIFICATE_KIND,
                          f"caCertificateRef {group or 'core'}/{kind or '(no kind)'} {name} "
                          "is not a ConfigMap or Secret")
    if not refgrant.permitted(reader, GATEWAY_GROUP, "Gateway", gw.namespace, "", kind, ns, name):
        return None, Cond(c.RESOLVED_REFS, False, c.R_REF_NOT_PERMITTED,
                          f"caCertificateRef {where} is in another namespace and no "
                          "ReferenceGrant allows it")
    obj = reader.get(kind, ns, name)
    if obj is None:
        return None, Cond(c.RESOLVED_REFS, False, c.R_INVALID_CA_CERTIFICATE_REF,
                          f"caCertificateRef {where} not found")
    if kind == "ConfigMap":
        pem = as_str(as_dict(obj.get("data")).get(CA_KEY))
    else:
        pem = secret_value(obj, CA_KEY) or ""
    why = f"has no {CA_KEY}" if not pem.strip() else check_ca_bundle(pem)
    if why:
        return None, Cond(c.RESOLVED_REFS, False, c.R_INVALID_CA_CERTIFICATE_REF,
                          f"caCertificateRef {where}: {why}")
    return pem, None


def resolve_port(reader: Reader, gw: ObjectKey, raw: dict) -> PortValidation:
    """One ``validation`` stanza -> what its port's HTTPS listeners get."""
    mode = as_str(raw.get("mode"), "AllowValidOnly") or "AllowValidOnly"
    if mode not in MODES:
        return PortValidation(mode, None, accepted_problem=Cond(
            c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
            f"frontend validation mode {mode!r} is not supported"))
    refs = as_list(raw.get("caCertificateRefs"))
    pems: list[str] = []
    problems: list[Cond] = []
    if not refs:
        problems.append(Cond(c.RESOLVED_REFS, False, c.R_INVALID_CA_CERTIFICATE_REF,
                             "frontend validation has no caCertificateRefs"))
    for ref in map(as_dict, refs):
        pem, problem = resolve_ca_ref(reader, gw, ref)
        if problem is not None:
            problems.append(problem)
        elif pem is not None and pem not in pems:
            pems.append(pem)
    refs_problem = None
    if problems:
        refs_problem = Cond(c.RESOLVED_REFS, False, problems[0].reason,
                            "; ".join(p.message for p in problems))
    if not pems:
        return PortValidation(mode, None, refs_problem, Cond(
            c.ACCEPTED, False, c.R_NO_VALID_CA_CERTIFICATE,
            "no usable CA certificate for client certificate validation"))
    bundle = "\n".join(p.strip() + "\n" for p in pems)
    return PortValidation(mode, l7.ClientValidation(bundle, mode), refs_problem)  # type: ignore[arg-type]


class FrontendTLS:
    """One Gateway's frontend validation, resolved once per port that needs it."""

    def __init__(self, reader: Reader, gw: ObjectKey, gateway_spec: dict) -> None:
        self.reader = reader
        self.gw = gw
        self.frontend = as_dict(as_dict(gateway_spec.get("tls")).get("frontend"))
        self._ports: dict[int, PortValidation | None] = {}

    def for_port(self, port: int) -> PortValidation | None:
        if port not in self._ports:
            raw = raw_validation(self.frontend, port) if self.frontend else None
            self._ports[port] = resolve_port(self.reader, self.gw, raw) if raw else None
        return self._ports[port]

    def apply(self, lis: ListenerIR) -> ListenerIR:
        """``lis`` with its port's validation and conditions (HTTPS listeners only).

        Conditions already False (a bad certificateRef, say) keep their own reason; a
        listener left without a usable CA is neither accepted nor programmed.
        """
        if lis.protocol != "HTTPS":
            return lis
        pv = self.for_port(lis.port)
        if pv is None:
            return lis
        rejected = pv.accepted_problem is not None
        programmed = lis.programmed and not rejected
        conds = []
        for cond in lis.conditions:
            if cond.type == c.ACCEPTED and cond.ok and pv.accepted_problem is not None:
                cond = pv.accepted_problem
            elif cond.type == c.RESOLVED_REFS and cond.ok and pv.refs_problem is not None:
                cond = pv.refs_problem
            elif cond.type == c.PROGRAMMED and cond.ok and not programmed:
                why = pv.accepted_problem.message if pv.accepted_problem else ""
                cond = Cond(c.PROGRAMMED, False, c.R_INVALID, why)
            conds.append(cond)
        return dataclasses.replace(
            lis, conditions=tuple(conds), accepted=lis.accepted and not rejected,
            programmed=programmed, supported_kinds=() if rejected else lis.supported_kinds,
            client_validation=pv.validation if programmed else None,
        )

    def gateway_conditions(self, listeners: Iterable[ListenerIR]) -> tuple[Cond, ...]:
        """InsecureFrontendValidationMode=True when an HTTPS listener's port asks for
        AllowInsecureFallback; nothing otherwise."""
        ports = sorted({lis.port for lis in listeners if lis.protocol == "HTTPS"
                        and (pv := self.for_port(lis.port)) is not None
                        and pv.mode == "AllowInsecureFallback"})
        if not ports:
            return ()
        return (Cond(c.INSECURE_FRONTEND_VALIDATION_MODE, True, c.R_CONFIGURATION_CHANGED,
                     "client certificate validation is AllowInsecureFallback on port(s) "
                     + ", ".join(map(str, ports)) + ": clients without a valid certificate "
                     "are served"),)


def bind_validation(listeners: Iterable[ListenerIR]) -> l7.ClientValidation | None:
    """The validation of one bound socket, from the HTTPS listeners sharing it.

    One Gateway's listeners on a port always agree (validation is per port). Gateways
    sharing a socket may not: then the strictest wins (AllowValidOnly, first Gateway in
    name order) so that no Gateway is served with less validation than it asked for;
    the other Gateways' clients must then pass it too.
    """
    found = [lis.client_validation for lis in listeners
             if lis.protocol == "HTTPS" and lis.client_validation is not None]
    strict = [v for v in found if v.mode == "AllowValidOnly"]
    if strict:
        return strict[0]
    return found[0] if found else None
