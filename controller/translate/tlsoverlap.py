"""Listener condition OverlappingTLSConfig (GEP-3567, HTTP/2 connection coalescing).

A client may reuse a TLS connection for any name the server's certificate is valid for,
so a request can arrive on a connection whose SNI chose another listener of the same
port. kgw answers such a request 421 (kgw_l7, ``CertStore.misdirected``); the spec also
asks controllers to warn about the configurations where it can happen: every terminating
listener (HTTPS, TLS Terminate) sharing a port with another whose hostname overlaps its
own (one covers the other, or either has none) gets OverlappingTLSConfig=True with
reason OverlappingHostnames; when the certificates they serve share a name (a SAN of one
covers a SAN of the other, whatever the hostnames), the reason is
OverlappingCertificates, which the spec prefers when both hold. The condition is
negative polarity: never set False. Listeners that are not accepted (conflicted,
invalid) are left out: they serve nothing.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from controller.translate import conditions as c
from controller.translate.hostname import covers
from controller.translate.ir import Cond, GatewayIR, ListenerIR
from controller.translate.tlscert import dns_names


def _terminates(lis: ListenerIR) -> bool:
    return lis.protocol == "HTTPS" or (lis.protocol == "TLS" and lis.tls_mode == "Terminate")


def _names_overlap(a: str | None, b: str | None) -> bool:
    if a is None or b is None or a == "*" or b == "*":
        return True
    return covers(a, b) or covers(b, a)


def _certificates_overlap(a: ListenerIR, b: ListenerIR) -> bool:
    names_a = {n for cert in a.certificates for n in dns_names(cert.cert_pem)}
    names_b = {n for cert in b.certificates for n in dns_names(cert.cert_pem)}
    return any(_names_overlap(x, y) for x in names_a for y in names_b)


def _label(lis: ListenerIR) -> str:
    ls = lis.listener_set
    where = f" of ListenerSet {ls.namespace}/{ls.name}" if ls else ""
    return f"{lis.name}{where} ({lis.hostname or 'any hostname'})"


def mark_overlapping(g: GatewayIR) -> GatewayIR:
    """``g`` with OverlappingTLSConfig on each of its terminating listeners (its own and
    its ListenerSets') that overlaps another on the same port (see the module docstring)."""
    by_port: dict[int, list[int]] = defaultdict(list)
    for i, lis in enumerate(g.listeners):
        if _terminates(lis) and lis.accepted:
            by_port[lis.port].append(i)
    marks: dict[int, tuple[bool, list[str]]] = {}
    for idx in by_port.values():
        for i in idx:
            for j in idx:
                a, b = g.listeners[i], g.listeners[j]
                if i == j:
                    continue
                same_cert = _certificates_overlap(a, b)
                if not same_cert and not _names_overlap(a.hostname, b.hostname):
                    continue
                certs, others = marks.get(i, (False, []))
                marks[i] = (certs or same_cert, others + [_label(b)])
    if not marks:
        return g
    listeners = list(g.listeners)
    for i, (certs, others) in marks.items():
        reason = c.R_OVERLAPPING_CERTIFICATES if certs else c.R_OVERLAPPING_HOSTNAMES
        what = "certificates overlap" if certs else "hostname overlaps"
        cond = Cond(c.OVERLAPPING_TLS_CONFIG, True, reason,
                    f"its {what} those of listener(s) {', '.join(others)} "
                    f"on port {listeners[i].port}: "
                    "a client may reuse a connection made for one to send requests for the other "
                    "(HTTP/2 connection coalescing); kgw answers those 421 Misdirected Request")
        lis = listeners[i]
        listeners[i] = dataclasses.replace(lis, conditions=lis.conditions + (cond,))
    return dataclasses.replace(g, listeners=tuple(listeners))
