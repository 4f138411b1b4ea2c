"""IR -> kgw_l4.config.L4Config: TCP/UDP frontends, and TLS ports routing by SNI to
routes passed through or (Terminate listeners) terminated.

Several TCPRoutes (or UDPRoutes) on one listener are all Accepted, but only the oldest
(then namespace/name order) carries traffic: a frontend forwards without looking at
the data, so there is nothing to choose a route by (conformance
TCPRouteMultipleRoutesAttachment).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from controller.objects import ObjectKey
from controller.policy.land import listener_policy
from controller.translate.emit_l7 import owners
from controller.translate.ir import GatewayIR, L4Contribution, ListenerIR
from kgw_l4 import config as l4
from kgw_l7 import config as l7


def build(gateways: Mapping[ObjectKey, GatewayIR],
          contributions: Iterable[L4Contribution]) -> l4.L4Config:
    frontends: dict[tuple[str, int, str, tuple], tuple[ListenerIR, list[L4Contribution]]] = {}
    tls_binds: dict[tuple[str, int], list[ListenerIR]] = defaultdict(list)
    for gk in sorted(gateways):
        g = gateways[gk]
        if not g.accepted:
            continue
        for lis in g.listeners:
            if not lis.programmed:
                continue
            for addr in g.binds:
                if lis.protocol in ("TCP", "UDP"):
                    frontends[(addr, lis.port, lis.protocol, lis.id)] = (lis, [])
                elif lis.protocol == "TLS":
                    tls_binds[(addr, lis.port)].append(lis)
    sni: dict[tuple[str, int], list[L4Contribution]] = defaultdict(list)
    for con in contributions:
        if con.protocol in ("TCP", "UDP"):
            fe = frontends.get((con.bind[0], con.bind[1], con.protocol, con.listener.id))
            if fe is not None:
                fe[1].append(con)
        elif con.bind in tls_binds:
            sni[con.bind].append(con)

    fes = []
    for (addr, port, proto, lid), (lis, cons) in frontends.items():
        cons.sort(key=lambda x: (x.created, x.route_key))
        backends = cons[0].backends if cons else ()
        route = f"{cons[0].route_key.namespace}/{cons[0].route_key.name}" if cons else ""
        fes.append(l4.Frontend(name=f"{lid[0].namespace}/{lid[0].name}/{lis.name}", address=addr,
                               port=port, protocol=proto, backends=backends,  # type: ignore[arg-type]
                               gateway=f"{lis.gateway.namespace}/{lis.gateway.name}",
                               listener=lis.name, route=route,
                               backend_proxy_protocol=_backend_proxy(lis) if proto == "TCP"
                               else 0,
                               proxy_protocol=_proxy_mode([lis]) if proto == "TCP" else ""))
    fes.sort(key=lambda f: (f.port, f.protocol, f.address, f.name))

    passthrough = []
    for bind in sorted(tls_binds, key=lambda b: (b[1], b[0])):
        listeners = tls_binds[bind]
        # (route, listener) -> (hostnames, backends, listener): a route attached through
        # two listeners of the port gets an SNIRoute per listener, each with the hostnames
        # that listener owns (metrics say which listener a connection came through)
        by_route: dict[tuple[ObjectKey, tuple], tuple[set[str], L4Contribution]] = {}
        for con in sorted(sni.get(bind, ()), key=lambda x: (x.created, x.route_key)):
            # Listener isolation by SNI, as for HTTP Host (emit_l7); a Passthrough and a
            # Terminate listener of one port (mixed mode) are told apart the same way.
            hosts = {h for h in con.hostnames if con.listener.id in owners(listeners, h)}
            if not hosts:
                continue
            entry = by_route.setdefault((con.route_key, con.listener.id), (set(), con))
            entry[0].update(hosts)
        routes = tuple(_sni_route(k, hosts, con) for (k, _), (hosts, con) in by_route.items())
        # (oldest first: it wins a shared SNI)
        passthrough.append(l4.TLSPassthrough(
            name=f"{bind[0]}:{bind[1]}", address=bind[0], port=bind[1], routes=routes,
            proxy_protocol=_proxy_mode(listeners)))
    return l4.L4Config(frontends=tuple(fes), tls_passthrough=tuple(passthrough))


def connection_limits(l7cfg: l7.L7Config) -> tuple[l4.ConnectionRateLimit, ...]:
    """The kernel's per-source connection rate limits: one per bound L7 socket whose
    listener policy has a TrafficPolicy ``connectionRateLimit`` (listeners sharing the
    socket were combined into one by the policy's section). Named after the socket, not a
    Gateway listener: a limit the kernel cannot apply is the policy's problem, not a
    reason to call the listener unprogrammed."""
    out = []
    for lis in l7cfg.listeners:
        lim = lis.policy.connection_rate_limit if lis.policy is not None else None
        if lim is not None:
            out.append(l4.ConnectionRateLimit(name=f"connectionRateLimit {lis.name}",
                                              address=lis.address, port=lis.port,
                                              per_second=lim.per_second, burst=lim.burst))
    return tuple(out)


def _sni_route(key: ObjectKey, hosts: set[str], con: L4Contribution) -> l4.SNIRoute:
    lis = con.listener
    terminate = None
    backends = con.backends
    if lis.tls_mode == "Terminate":
        certs = tuple(l4.ServingCert(c.server_names, c.cert_pem, c.key_pem)
                      for c in lis.certificates)
        terminate = l4.Termination(certs, con.backend_tls)
        backends = con.terminated
    return l4.SNIRoute(name=f"{key.namespace}/{key.name}", hostnames=tuple(sorted(hosts)),
                       backends=backends, gateway=f"{lis.gateway.namespace}/{lis.gateway.name}",
                       listener=lis.name, terminate=terminate,
                       backend_proxy_protocol=_backend_proxy(lis))


def _proxy_mode(listeners: list[ListenerIR]) -> l4.ProxyMode:
    """A TrafficPolicy ``proxyProtocol`` on the listeners of one bound socket (the
    strictest of theirs, as on L7 sockets)."""
    policy = listener_policy(lis.policy for lis in sorted(listeners, key=lambda x: x.id))
    pp = policy.proxy_protocol if policy is not None else None
    return "" if pp is None else "optional" if pp.optional else "required"


def _backend_proxy(lis: ListenerIR) -> int:
    """A TrafficPolicy ``backendProxyProtocol`` on a TCP or TLS listener (or its Gateway):
    the PROXY protocol version its routes' backends get (0: none). L4 routes are not
    policy targets; their listener is."""
    return int(dict(lis.policy).get("backendProxyProtocol") or 0)  # type: ignore[call-overload]
