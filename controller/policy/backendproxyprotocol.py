"""TrafficPolicy ``backendProxyProtocol``: kgw starts each connection to the rule's
backends with a PROXY protocol v2 header naming the client (kgw_l7.proxyproto), for
backends that want the client address without trusting an X-Forwarded-For header.

Such a connection speaks for one client: it is reused only by that client's connection
(L7 pools it per client, HTTP/2 included), never shared as an ordinary keep-alive one.
``version`` is V2 only (the binary form every receiver that takes one takes).

TCPRoutes and TLSRoutes are not policy targets: set on a TCP or TLS listener (or its
Gateway), it applies to the backends of the routes attached there (the L4 plane writes
the header before the first byte of the client's: controller/translate/emit_l4.py). A
TCP listener's bytes are forwarded by the kernel in the tc and xdp L4 modes, where no
header can be written: the listener is then not programmed and its status says why
(kgw_l4.plane.without_proxied_frontends). UDP listeners: not applied (the policy's
status says so).
"""

from __future__ import annotations

from typing import Any

from controller.policy.section import Section
from controller.schema.nodes import Str, obj

SCHEMA = obj({"version": Str(enum=("V2",), default="V2")})


def compile_backend_proxy_protocol(value: dict[str, Any], scope: str) -> int:
    return 2


SECTION = Section("backendProxyProtocol", SCHEMA, compile_backend_proxy_protocol,
                  "backend_proxy_protocol")
