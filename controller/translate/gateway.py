"""GatewayClasses and Gateways of ours -> GatewayIR (listeners, addresses, conditions).

Runs over every Gateway on each translation: there are few of them, and everything
else depends on them. Certificate checks are cached by content (tlscert).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping

from controller.objects import GATEWAY_GROUP, Obj, ObjectKey
from controller.translate import conditions as c
from controller.translate.ir import Cond, GatewayIR, ListenerIR
from controller.translate import refgrant
from controller.translate.frontendtls import FrontendTLS
from controller.translate.listener import resolve_listener
from controller.translate.reader import Reader
from controller.translate.tlscert import tls_secret
from controller.translate.util import (
    as_dict, as_list, as_str, creation_timestamp, gen, is_ip, ref_group, spec,
)

#: Transport a listener's socket uses, and the family of listeners that can share it.
FAMILY = {"HTTP": ("tcp", "http"), "HTTPS": ("tcp", "https"), "TLS": ("tcp", "tls"),
           "TCP": ("tcp", "tcp"), "UDP": ("udp", "udp")}


def class_conditions(reader: Reader, gc: Obj) -> tuple[Cond, ...]:
    """Conditions of a GatewayClass of ours."""
    pref = spec(gc).get("parametersRef")
    bad = None
    if pref is not None:
        pref = as_dict(pref)
        group, kind = ref_group(pref, ""), as_str(pref.get("kind"))
        name, ns = as_str(pref.get("name")), as_str(pref.get("namespace"))
        # kgw takes no class parameters: an empty ConfigMap is tolerated, one that sets
        # something (which kgw would ignore) is refused, as is anything else.
        if group != "" or kind != "ConfigMap":
            bad = f"parametersRef {group or 'core'}/{kind} is not a kind kgw supports"
        elif not ns or reader.get("ConfigMap", ns, name) is None:
            bad = f"parametersRef ConfigMap {ns}/{name} not found"
        else:
            bad = _parameters_set(reader.get("ConfigMap", ns, name),
                                  f"parametersRef ConfigMap {ns}/{name}")
    accepted = (Cond(c.ACCEPTED, False, c.R_INVALID_PARAMETERS, bad) if bad
                else Cond(c.ACCEPTED, True, c.R_ACCEPTED, "GatewayClass accepted by kgw"))
    return (accepted, Cond(c.SUPPORTED_VERSION, True, c.R_SUPPORTED_VERSION,
                           "Gateway API version supported"))


def _parameters_set(cm: Obj | None, what: str) -> str | None:
    """kgw reads no parameters: a ConfigMap that sets any would be ignored, so it is refused."""
    keys = sorted(
        map(str, {**as_dict((cm or {}).get("data")), **as_dict((cm or {}).get("binaryData"))}))
    if not keys:
        return None
    return (
        f"{what} sets {', '.join(keys)}: kgw reads no parameters (an empty ConfigMap is accepted)")


def mark_conflict(listener: ListenerIR, reason: str, message: str) -> ListenerIR:
    conds = []
    for cond in listener.conditions:
        if cond.type == c.ACCEPTED:
            cond = Cond(c.ACCEPTED, False, reason, message)
        elif cond.type == c.CONFLICTED:
            cond = Cond(c.CONFLICTED, True, reason, message)
        elif cond.type == c.PROGRAMMED:
            cond = Cond(c.PROGRAMMED, False, reason, message)
        conds.append(cond)
    return dataclasses.replace(listener, conditions=tuple(conds), accepted=False, programmed=False,
                               supported_kinds=())


def _mark_unavailable(listener: ListenerIR, message: str) -> ListenerIR:
    conds = []
    for cond in listener.conditions:
        if cond.type == c.ACCEPTED:
            cond = Cond(c.ACCEPTED, False, c.R_PORT_UNAVAILABLE, message)
        elif cond.type == c.PROGRAMMED:
            cond = Cond(c.PROGRAMMED, False, c.R_PORT_UNAVAILABLE, message)
        conds.append(cond)
    return dataclasses.replace(listener, conditions=tuple(conds), accepted=False, programmed=False)


def _protocol_text(lis: ListenerIR) -> str:
    return (f"{lis.protocol} {lis.tls_mode}" if lis.protocol == "TLS" and lis.tls_mode
            else lis.protocol)


def apply_conflicts(listeners: list[ListenerIR]) -> list[ListenerIR]:
    """Listeners of one Gateway sharing a port must be compatible (spec: Conflicted).

    Different protocol families on one port -> ProtocolConflict for all of them; the same
    family with the same hostname -> HostnameConflict for all of them.
    """
    by_port: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, lis in enumerate(listeners):
        if lis.protocol in FAMILY and 1 <= lis.port <= 65535:
            by_port[(FAMILY[lis.protocol][0], lis.port)].append(i)
    out = list(listeners)
    for (_, port), idx in by_port.items():
        if len(idx) < 2:
            continue
        # TLS Passthrough and Terminate share a port: the SNI picks the listener (mixed mode).
        families = {FAMILY[out[i].protocol][1] for i in idx}
        if len(families) > 1:
            for i in idx:
                others = ", ".join(f"{out[j].name} ({_protocol_text(out[j])})" for j in idx
                                   if j != i)
                out[i] = mark_conflict(out[i], c.R_PROTOCOL_CONFLICT,
                                        f"port {port} is also used by listener(s) of another "
                                        f"protocol: {others}")
            continue
        seen: dict[str | None, list[int]] = defaultdict(list)
        for i in idx:
            seen[out[i].hostname].append(i)
        for h, same in seen.items():
            if len(same) > 1:
                for i in same:
                    others = ", ".join(out[j].name for j in same if j != i)
                    out[i] = mark_conflict(out[i], c.R_HOSTNAME_CONFLICT,
                                            f"port {port} and hostname {h or '(any)'} are also "
                                            f"used by listener(s) {others}")
    return out


def _is_local(ip: str, local: tuple[str, ...] | None) -> bool:
    """``local``: the node's local addresses and prefixes (the kernel's local table, e.g.
    127.0.0.0/8); None takes every address as local (no view of the node)."""
    addr = ipaddress.ip_address(ip)
    if local is None or addr.is_unspecified:
        return True
    return any(addr in ipaddress.ip_network(n, strict=False) for n in local
               if ipaddress.ip_network(n, strict=False).version == addr.version)


def _addresses(
    gw: Obj, node_addresses: tuple[str, ...], local_addresses: tuple[str, ...] | None,
    assigned: str | None = None, resolved: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...], Cond | None, Cond | None]:
    """(status addresses, bind addresses, Accepted problem, Programmed problem).

    IPAddress values are served when the node owns them; Hostname values when they
    resolved (``resolved``: what the controller's resolver answered, outside this pure
    function) to addresses the node owns, which are then bound and the hostname is what
    status reports. Any other type is UnsupportedAddress (Accepted=False); an address
    the node cannot serve is AddressNotUsable (Programmed=False): nothing of the Gateway
    is served until the spec names only addresses kgw can bind here."""
    requested = as_list(spec(gw).get("addresses"))
    reported: list[str] = []
    ips: list[str] = []
    unsupported: list[str] = []
    unusable: list[str] = []
    for a in map(as_dict, requested):
        atype = as_str(a.get("type"), "IPAddress") or "IPAddress"
        value = as_str(a.get("value"))
        if atype == "IPAddress":
            if not value:
                continue  # "give me an address": the node's
            if not is_ip(value):
                unsupported.append(f"IPAddress {value!r}")
                continue
            ip = str(ipaddress.ip_address(value))
            if not _is_local(ip, local_addresses):
                unusable.append(f"{ip} is not an address of this node")
            elif ip not in ips:
                ips.append(ip)
                reported.append(ip)
        elif atype == "Hostname" and value:
            found = (resolved or {}).get(value.lower().rstrip("."))
            if not found:
                unusable.append(f"hostname {value} does not resolve")
                continue
            foreign = [ip for ip in found if not _is_local(ip, local_addresses)]
            if foreign:
                unusable.append(
                    f"hostname {value} resolves to {', '.join(foreign)}, not an address of this "
                    "node")
                continue
            if value not in reported:
                reported.append(value)
            ips.extend(ip for ip in found if ip not in ips)
        else:
            unsupported.append(f"{atype} {value!r}")
    acc = (Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_ADDRESS,
                "unsupported addresses: " + ", ".join(unsupported)) if unsupported else None)
    prog = (Cond(c.PROGRAMMED, False, c.R_ADDRESS_NOT_USABLE,
                 "addresses not usable: " + "; ".join(unusable)) if unusable else None)
    if acc or prog:
        return (), (), acc, prog
    if ips:
        return tuple(reported), tuple(ips), acc, prog
    if assigned:
        return (assigned,), (assigned,), acc, prog
    return tuple(node_addresses), ("0.0.0.0",), acc, prog


def backend_client_certificate(reader: Reader, gw: Obj,
                               key: ObjectKey) -> tuple[tuple[str, str] | None, Cond | None]:
    """spec.tls.backend.clientCertificateRef -> ((cert, key) | None, Gateway ResolvedRefs
    condition | None)."""
    ref = as_dict(as_dict(as_dict(spec(gw).get("tls")).get("backend")).get("clientCertificateRef"))
    if not ref:
        return None, None
    group, kind = ref_group(ref, ""), as_str(ref.get("kind"), "Secret") or "Secret"
    name, ns = as_str(ref.get("name")), as_str(ref.get("namespace")) or key.namespace
    bad = c.R_INVALID_CLIENT_CERTIFICATE_REF
    if group != "" or kind != "Secret":
        return None, Cond(c.RESOLVED_REFS, False, bad,
                          f"clientCertificateRef {group or 'core'}/{kind} is not a Secret")
    if not refgrant.permitted(reader, GATEWAY_GROUP, "Gateway", key.namespace, "", "Secret", ns,
                              name):
        return None, Cond(c.RESOLVED_REFS, False, c.R_REF_NOT_PERMITTED,
                          f"Secret {ns}/{name} is in another namespace and no ReferenceGrant "
                          "allows it")
    secret = reader.get("Secret", ns, name)
    if secret is None:
        return None, Cond(c.RESOLVED_REFS, False, bad, f"Secret {ns}/{name} not found")
    pair = tls_secret(secret)
    if isinstance(pair, str):
        return None, Cond(c.RESOLVED_REFS, False, bad, f"Secret {ns}/{name}: {pair}")
    return pair, Cond(c.RESOLVED_REFS, True, c.R_RESOLVED_REFS,
                      "backend client certificate resolved")


def resolve_gateway(
    reader: Reader,
    gw: Obj,
    class_name: str,
    node_addresses: tuple[str, ...],
    local_addresses: tuple[str, ...] | None,
    assigned: str | None = None,
    resolved: Mapping[str, tuple[str, ...]] | None = None,
) -> GatewayIR:
    """``assigned``: the address to bind when spec.addresses names none (Options.gateway_addresses);
    ``resolved``: what Hostname addresses resolved to (Options.resolved_hostnames)."""
    key = ObjectKey.of(gw)
    g = gen(gw)
    frontend = FrontendTLS(reader, key, spec(gw))
    listeners = [frontend.apply(resolve_listener(reader, key, as_dict(raw)))
                 for raw in as_list(spec(gw).get("listeners"))]
    listeners = apply_conflicts(listeners)
    status_addrs, binds, addr_acc, addr_prog = _addresses(gw, node_addresses, local_addresses,
                                                          assigned, resolved)

    params_problem = None
    infra = as_dict(spec(gw).get("infrastructure"))
    if infra.get("parametersRef") is not None:
        pref = as_dict(infra.get("parametersRef"))
        group, kind, name = ref_group(pref, ""), as_str(pref.get("kind")), as_str(pref.get("name"))
        if group != "" or kind != "ConfigMap":
            params_problem = (
                f"infrastructure.parametersRef {group or 'core'}/{kind} is not supported")
        elif reader.get("ConfigMap", key.namespace, name) is None:
            params_problem = f"infrastructure.parametersRef ConfigMap {name} not found"
        else:
            params_problem = _parameters_set(reader.get("ConfigMap", key.namespace, name),
                                             f"infrastructure.parametersRef ConfigMap {name}")

    client_cert, refs_cond = backend_client_certificate(reader, gw, key)
    invalid = [lis for lis in listeners if not lis.programmed]
    any_accepted = any(lis.accepted for lis in listeners) or not listeners
    if params_problem:
        accepted = Cond(c.ACCEPTED, False, c.R_INVALID_PARAMETERS, params_problem)
    elif addr_acc:
        accepted = addr_acc
    elif not any_accepted:
        accepted = Cond(c.ACCEPTED, False, c.R_LISTENERS_NOT_VALID, "no listener is valid")
    elif invalid:
        accepted = Cond(c.ACCEPTED, True, c.R_LISTENERS_NOT_VALID,
                        "invalid listeners: " + ", ".join(sorted(lis.name for lis in invalid)))
    else:
        accepted = Cond(c.ACCEPTED, True, c.R_ACCEPTED, "Gateway accepted")
    if not accepted.ok:
        programmed = Cond(c.PROGRAMMED, False, c.R_INVALID, accepted.message)
        listeners = [_not_programmed(lis, "Gateway not accepted: " + accepted.message)
                     for lis in listeners]
    elif addr_prog:
        programmed = addr_prog
        listeners = [_not_programmed(lis, "Gateway not programmed: " + addr_prog.message)
                     for lis in listeners]
    elif not any(lis.programmed for lis in listeners) and listeners:
        programmed = Cond(c.PROGRAMMED, False, c.R_INVALID, "no listener is programmed")
    else:
        programmed = Cond(c.PROGRAMMED, True, c.R_PROGRAMMED, "Gateway programmed")
    return GatewayIR(
        key=key, generation=g, class_name=class_name, accepted=accepted.ok,
        conditions=((accepted, programmed) + ((refs_cond,) if refs_cond else ())
                    + frontend.gateway_conditions(listeners)),
        listeners=tuple(listeners),
        addresses=status_addrs, binds=binds, created=creation_timestamp(gw),
        backend_client_cert=client_cert,
    )


def _not_programmed(lis: ListenerIR, message: str) -> ListenerIR:
    if not lis.programmed:
        return lis
    conds = tuple(Cond(c.PROGRAMMED, False, c.R_INVALID, message)
                  if x.type == c.PROGRAMMED else x for x in lis.conditions)
    return dataclasses.replace(lis, conditions=conds, programmed=False)


def apply_port_sharing(gateways: Iterable[GatewayIR]) -> dict[ObjectKey, GatewayIR]:
    """Gateways share sockets; a listener whose socket another Gateway already uses for
    an incompatible protocol (or, for TCP/UDP, at all) gets Accepted=False PortUnavailable.
    The oldest Gateway keeps the port (then namespace/name order)."""
    ordered = sorted(gateways, key=lambda g: (g.created, g.key))
    owner: dict[tuple[str, str, int], tuple[str, ObjectKey]] = {}
    out: dict[ObjectKey, GatewayIR] = {}
    for g in ordered:
        changed = False
        new_listeners = []
        for lis in g.listeners:
            if lis.programmed and g.accepted:
                transport, family = FAMILY[lis.protocol]
                taken = None
                for addr in g.binds:
                    for bind in {addr, "0.0.0.0"} if addr != "0.0.0.0" else {"0.0.0.0"}:
                        prev = owner.get((transport, bind, lis.port))
                        if prev and prev[1] != g.key and (prev[0] != family
                                                          or family in ("tcp", "udp")):
                            taken = prev[1]
                if taken is not None:
                    lis = _mark_unavailable(
                        lis, f"port {lis.port} is used by Gateway {taken.namespace}/{taken.name}")
                    changed = True
                else:
                    for addr in g.binds:
                        owner.setdefault((transport, addr, lis.port), (family, g.key))
            new_listeners.append(lis)
        out[g.key] = dataclasses.replace(g, listeners=tuple(new_listeners)) if changed else g
    return out
