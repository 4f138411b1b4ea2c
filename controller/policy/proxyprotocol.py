"""TrafficPolicy ``proxyProtocol``: connections to a listener start with a PROXY protocol
header (v1 or v2, kgw_l7.proxyproto) naming the client a TCP load balancer in front of
kgw accepted them from; that client address is then the connection's (X-Forwarded-For,
access logs, anything keyed on the client).

A connection without a valid header is closed, unless
``allowRequestsWithoutProxyProtocol`` (kgateway's name for it) lets connections without
any header through with their own address (a malformed header is still refused).

It acts before any request is read, so only a Gateway or one of its listeners can set it.
Several Gateway listeners bound to one socket share its connections: the strictest
applies there (required if any of them requires it). On HTTPS listeners the header comes
before the TLS handshake: it is read off the socket first (kgw_l7.proxyaccept). Where
kgw cannot read it (translator.LISTENER_SECTION_PROTOCOLS) the policy is reported
Invalid for that target, never Accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from controller.policy.section import Section
from controller.schema.nodes import Bool, obj
from kgw_l7.config import ProxyProtocol

SCHEMA = obj({"allowRequestsWithoutProxyProtocol": Bool(default=False)})


def compile_proxy_protocol(value: dict[str, Any], scope: str) -> ProxyProtocol:
    return ProxyProtocol(optional=bool(value.get("allowRequestsWithoutProxyProtocol")))


def strictest(values: list[ProxyProtocol]) -> ProxyProtocol:
    return ProxyProtocol(optional=all(v.optional for v in values))


SECTION = Section("proxyProtocol", SCHEMA, compile_proxy_protocol, "proxy_protocol",
                  listener_only=True, combine=strictest)
