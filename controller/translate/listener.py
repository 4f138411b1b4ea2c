"""One Gateway listener: protocol, route kinds, TLS, allowedRoutes -> ListenerIR.

Conflicts between listeners need all of a Gateway's listeners and are decided in
``gateway.py``; this module validates one listener on its own.
"""

from __future__ import annotations

from controller.objects import GATEWAY_GROUP, ObjectKey
from controller.translate import conditions as c
from controller.translate import hostname as hn
from controller.translate import refgrant
from controller.translate.ir import Cond, ListenerIR, Selector
from controller.translate.reader import Reader
from controller.translate.tlscert import tls_secret
from controller.translate.util import as_dict, as_int, as_list, as_str, meta, ref_group
from kgw_l7 import config as l7

#: Route kinds each protocol accepts, in the order supportedKinds lists them.
PROTOCOL_KINDS: dict[str, tuple[str, ...]] = {
    "HTTP": ("HTTPRoute",),
    "HTTPS": ("HTTPRoute",),
    "TLS": ("TLSRoute",),
    "TCP": ("TCPRoute",),
    "UDP": ("UDPRoute",),
}
#: Route kinds of the API kgw reads but does not serve yet, and why: no listener lists
#: them in supportedKinds, a listener asking for one has ResolvedRefs=False
#: InvalidRouteKinds, and such a route is never Accepted.
NOT_SERVED: dict[str, str] = {
    "GRPCRoute": "kgw does not serve GRPCRoute yet (no HTTP/2)",
}


NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def namespace_selected(reader: Reader, selector: Selector, namespace: str) -> bool:
    """Does ``selector`` match the labels of ``namespace`` (which always carries its
    kubernetes.io/metadata.name label, as the API server sets it)?"""
    ns = reader.get("Namespace", "", namespace)
    labels = dict(as_dict(meta(ns).get("labels"))) if ns is not None else {}
    labels.setdefault(NAMESPACE_NAME_LABEL, namespace)
    return selector.matches(labels)


def parse_selector(raw: object) -> Selector:
    sel = as_dict(raw)
    labels = as_dict(sel.get("matchLabels"))
    exprs = []
    valid = all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
    for e in as_list(sel.get("matchExpressions")):
        e = as_dict(e)
        op = as_str(e.get("operator"))
        values = tuple(sorted(v for v in as_list(e.get("values")) if isinstance(v, str)))
        if op not in ("In", "NotIn", "Exists", "DoesNotExist") or not as_str(e.get("key")):
            valid = False
        if op in ("In", "NotIn") and not values:
            valid = False
        exprs.append((as_str(e.get("key")), op, values))
    return Selector(
        tuple(sorted((k, v) for k, v in labels.items() if isinstance(v, str))),
        tuple(sorted(exprs)),
        valid,
    )


def _route_kinds(protocol: str, allowed: dict) -> tuple[tuple[str, ...], list[str]]:
    """(supported kinds, why each requested kind that is not supported is not)."""
    valid_for = PROTOCOL_KINDS.get(protocol, ())
    kinds = allowed.get("kinds")
    if not isinstance(kinds, list) or not kinds:
        return valid_for, []
    out: list[str] = []
    bad: list[str] = []
    for k in map(as_dict, kinds):
        group, kind = ref_group(k), as_str(k.get("kind"))
        if group == GATEWAY_GROUP and kind in valid_for:
            if kind not in out:
                out.append(kind)
        elif group == GATEWAY_GROUP and kind in NOT_SERVED:
            bad.append(f"{kind}: {NOT_SERVED[kind]}")
        else:
            bad.append(f"{group}/{kind} is not a route kind a {protocol} listener serves")
    return tuple(out), bad


def _certificates(
    reader: Reader, gw: ObjectKey, tls: dict, server_names: tuple[str, ...]
) -> tuple[tuple[l7.Certificate, ...], tuple[str, ...], Cond | None]:
    """The certificates of a terminating listener (HTTPS, or TLS Terminate), the Secret
    ("ns/name") each comes from, or the ResolvedRefs problem."""
    refs = as_list(tls.get("certificateRefs"))
    if not refs:
        return (), (), Cond(c.RESOLVED_REFS, False, c.R_INVALID_CERTIFICATE_REF,
                            "no certificateRefs")
    certs: list[l7.Certificate] = []
    secrets: list[str] = []
    for ref in map(as_dict, refs):
        group, kind = ref_group(ref, ""), as_str(ref.get("kind"), "Secret") or "Secret"
        name = as_str(ref.get("name"))
        ns = as_str(ref.get("namespace")) or gw.namespace
        where = f"{kind} {ns}/{name}"
        if group != "" or kind != "Secret":
            return (), (), Cond(c.RESOLVED_REFS, False, c.R_INVALID_CERTIFICATE_REF,
                                f"unsupported certificateRef {group or 'core'}/{kind}")
        # gw is the declaring object: a Gateway, or a ListenerSet (whose grants are its own).
        if not refgrant.permitted(reader, GATEWAY_GROUP, gw.kind, gw.namespace, "", "Secret", ns,
                                  name):
            return (), (), Cond(c.RESOLVED_REFS, False, c.R_REF_NOT_PERMITTED,
                                f"{where} is in another namespace and no ReferenceGrant allows it")
        secret = reader.get("Secret", ns, name)
        if secret is None:
            return (), (), Cond(c.RESOLVED_REFS, False, c.R_INVALID_CERTIFICATE_REF,
                                f"{where} not found")
        pair = tls_secret(secret)
        if isinstance(pair, str):
            return (), (), Cond(c.RESOLVED_REFS, False, c.R_INVALID_CERTIFICATE_REF,
                                f"{where}: {pair}")
        certs.append(l7.Certificate(server_names, pair[0], pair[1]))
        secrets.append(f"{ns}/{name}")
    return tuple(certs), tuple(secrets), None


def resolve_listener(reader: Reader, gw: ObjectKey, raw: dict) -> ListenerIR:
    """Validate one listener; conflicts are applied later by the Gateway.

    ``gw`` is the object declaring it (a Gateway, or a ListenerSet: listenerset.py
    then re-parents the result); certificate references are resolved as its own."""
    name = as_str(raw.get("name"))
    protocol = as_str(raw.get("protocol"))
    port = as_int(raw.get("port"), 0) or 0
    h = as_str(raw.get("hostname"))
    hostname = hn.normalize(h) if h else None
    allowed = as_dict(raw.get("allowedRoutes"))
    ns_sel = as_dict(allowed.get("namespaces"))
    allowed_from = as_str(ns_sel.get("from"), "Same") or "Same"
    selector = parse_selector(ns_sel.get("selector")) if allowed_from == "Selector" else None
    tls = as_dict(raw.get("tls"))
    tls_mode = None
    problems: list[Cond] = []
    certs: tuple[l7.Certificate, ...] = ()
    secrets: tuple[str, ...] = ()

    supported, bad_kinds = _route_kinds(protocol, allowed)
    if protocol not in PROTOCOL_KINDS:
        problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_PROTOCOL,
                             f"protocol {protocol!r} is not supported"))
        supported = ()
    elif not (1 <= port <= 65535):
        problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE, f"port {port} out of range"))
    if allowed_from not in ("Same", "All", "Selector", "None"):
        problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                             f"allowedRoutes.namespaces.from {allowed_from!r} is not supported"))
    if protocol in ("HTTPS", "TLS"):
        tls_mode = as_str(tls.get("mode"), "Terminate") or "Terminate"
        if protocol == "HTTPS" and tls_mode != "Terminate":
            problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                 "HTTPS listeners must use tls.mode Terminate"))
        elif protocol == "TLS" and tls_mode not in ("Passthrough", "Terminate"):
            problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                 f"tls.mode {tls_mode!r} is not supported"))
    options = as_dict(tls.get("options"))
    if options and protocol in ("HTTPS", "TLS"):
        problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                             "tls.options: kgw defines no TLS options ("
                             + ", ".join(sorted(map(str, options)))
                             + "); the listener is not served rather than served without them"))
    if protocol in ("HTTPS", "TLS") and tls_mode == "Terminate":
        certs, secrets, cond = _certificates(reader, gw, tls, (hostname or "*",))
        if cond is not None:
            problems.append(cond)
    if bad_kinds:
        problems.append(Cond(c.RESOLVED_REFS, False, c.R_INVALID_ROUTE_KINDS,
                             "allowedRoutes.kinds: " + "; ".join(bad_kinds)))

    accepted_bad = next((p for p in problems if p.type == c.ACCEPTED), None)
    if accepted_bad is not None:
        supported = ()  # a listener that is not accepted serves no kind
    refs_bad = next((p for p in problems if p.type == c.RESOLVED_REFS), None)
    conds = [
        accepted_bad or Cond(c.ACCEPTED, True, c.R_ACCEPTED, "listener accepted"),
        Cond(c.CONFLICTED, False, c.R_NO_CONFLICTS, "no conflicts"),
        refs_bad or Cond(c.RESOLVED_REFS, True, c.R_RESOLVED_REFS, "all references resolved"),
    ]
    programmed = accepted_bad is None and refs_bad is None
    conds.append(
        Cond(c.PROGRAMMED, True, c.R_PROGRAMMED, "listener programmed")
        if programmed
        else Cond(c.PROGRAMMED, False, c.R_INVALID, (accepted_bad or refs_bad).message)  # type: ignore[union-attr]
    )
    return ListenerIR(
        gateway=gw, name=name, port=port, protocol=protocol, hostname=hostname,
        tls_mode=tls_mode, allowed_from=allowed_from, selector=selector,
        supported_kinds=supported, certificates=certs, certificate_secrets=secrets,
        conditions=tuple(conds),
        accepted=accepted_bad is None, programmed=programmed,
    )
