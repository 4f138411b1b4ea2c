"""IR -> kgw_l7.config.L7Config, keeping unchanged VirtualHost records between runs.

One kgw_l7 Listener per bound (address, port). Its virtual hosts are the intersected
hostnames of the routes attached there, plus every listener hostname. The proxy picks
one virtual host per request (exact, longest wildcard, "*"), so each virtual host holds
every rule that applies to the hosts it stands for:

* Hostname precedence (HTTPRoute spec.hostnames): rules of routes with the more specific
  matching hostname come first, but a less specific route (wildcard, or no hostname)
  still applies when none of them matches. So virtual host ``a.example.com`` lists its
  own routes, then those of ``*.example.com``, then ``*.com``, then ``*`` - each group
  sorted by match precedence (precedence.py).
* Listener isolation (spec; conformance GatewayHTTPListenerIsolation): a request is
  handled by the most specific Gateway listener matching its Host, so a virtual host
  keeps only rules that came through the most specific listener(s) covering its
  hostname; and every listener hostname gets a virtual host (maybe empty -> 404) so a
  request for it never falls through to a less specific listener's wildcard.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from controller.objects import ObjectKey
from controller.policy.land import listener_policy
from controller.translate import hostname as hn
from controller.translate.frontendtls import bind_validation
from controller.translate.ir import GatewayIR, L7Contribution, ListenerIR
from kgw_l7 import config as l7

Bind = tuple[str, int]
VKey = tuple[str, int, str]


def bound_listeners(gateways: Iterable[GatewayIR]) -> dict[Bind, list[ListenerIR]]:
    out: dict[Bind, list[ListenerIR]] = defaultdict(list)
    for g in gateways:
        if not g.accepted:
            continue
        for lis in g.listeners:
            if lis.programmed and lis.protocol in ("HTTP", "HTTPS"):
                for addr in g.binds:
                    out[(addr, lis.port)].append(lis)
    return out


def covering(hostname: str) -> list[str]:
    """The hostnames whose routes apply to ``hostname``, most specific first:
    a.b.example.com -> itself, *.b.example.com, *.example.com, *.com, *."""
    out = [hostname]
    labels = hostname[2:].split(".") if hostname.startswith("*.") else hostname.split(".")
    for i in range(1, len(labels)):
        out.append("*." + ".".join(labels[i:]))
    if hostname != "*":
        out.append("*")
    return out


def owners(listeners: list[ListenerIR], hostname: str) -> set[tuple[ObjectKey, str]]:
    """Ids of the most specific listeners covering ``hostname``."""
    cands = [lis for lis in listeners if hn.covers(lis.hostname, hostname)]
    if not cands:
        return set()
    best = max(hn.specificity(lis.hostname) for lis in cands)
    return {lis.id for lis in cands if hn.specificity(lis.hostname) == best}


class L7Emitter:
    """Holds each route's contributions; rebuilds only the virtual hosts they touch."""

    def __init__(self) -> None:
        self._members: dict[VKey, dict[ObjectKey, tuple[L7Contribution, ...]]] = defaultdict(dict)
        self._route_vkeys: dict[ObjectKey, set[VKey]] = {}
        self._hosts: dict[Bind, set[str]] = defaultdict(set)
        self._sorted_hosts: dict[Bind, tuple[str, ...]] = {}
        self._vhosts: dict[VKey, l7.VirtualHost] = {}
        self._bind_sig: dict[Bind, tuple] = {}

    def _dirty(self, vk: VKey) -> None:
        """Forget the virtual host ``vk`` and those it covers (they include its routes)."""
        self._vhosts.pop(vk, None)
        h = vk[2]
        if h == "*" or h.startswith("*."):
            bind = (vk[0], vk[1])
            for other in self._hosts.get(bind, ()):
                if other != h and hn.covers(h, other):
                    self._vhosts.pop((vk[0], vk[1], other), None)

    def set_route(self, key: ObjectKey, contributions: tuple[L7Contribution, ...]) -> None:
        for vk in self._route_vkeys.pop(key, ()):
            members = self._members[vk]
            members.pop(key, None)
            self._dirty(vk)
            if not members:
                del self._members[vk]
                bind = (vk[0], vk[1])
                self._hosts[bind].discard(vk[2])
                self._sorted_hosts.pop(bind, None)
        if not contributions:
            return
        grouped: dict[VKey, list[L7Contribution]] = defaultdict(list)
        for con in contributions:
            grouped[(con.bind[0], con.bind[1], con.hostname)].append(con)
        for vk, cons in grouped.items():
            self._members[vk][key] = tuple(cons)
            bind = (vk[0], vk[1])
            if vk[2] not in self._hosts[bind]:
                self._hosts[bind].add(vk[2])
                self._sorted_hosts.pop(bind, None)
            self._dirty(vk)
        self._route_vkeys[key] = set(grouped)

    def _vhost(self, vk: VKey, listeners: list[ListenerIR]) -> l7.VirtualHost:
        vh = self._vhosts.get(vk)
        if vh is None:
            own = owners(listeners, vk[2])
            routes: list[l7.Route] = []
            for h in covering(vk[2]):
                members = self._members.get((vk[0], vk[1], h))
                if not members:
                    continue
                entries = [e for cons in members.values() for con in cons
                           if con.listener.id in own for e in con.routes]
                entries.sort(key=lambda e: e[0])
                routes.extend(r for _, r in entries)
            vh = l7.VirtualHost(vk[2], tuple(routes))
            self._vhosts[vk] = vh
        return vh

    def build(self, gateways: Mapping[ObjectKey, GatewayIR]) -> l7.L7Config:
        binds = bound_listeners(gateways[k] for k in sorted(gateways))
        out = []
        for bind in sorted(binds, key=lambda b: (b[1], b[0])):
            listeners = binds[bind]
            sig = tuple(sorted((lis.id, lis.hostname, lis.protocol) for lis in listeners))
            if self._bind_sig.get(bind) != sig:
                self._bind_sig[bind] = sig
                for h in self._hosts.get(bind, ()):
                    self._vhosts.pop((bind[0], bind[1], h), None)
                self._sorted_hosts.pop(bind, None)
            hosts = self._sorted_hosts.get(bind)
            if hosts is None:
                extra = {lis.hostname for lis in listeners if lis.hostname}
                hosts = tuple(sorted(self._hosts.get(bind, set()) | extra))
                self._sorted_hosts[bind] = hosts
            vhosts = tuple(self._vhost((bind[0], bind[1], h), listeners) for h in hosts)
            protocol: l7.ListenerProtocol = (
                "HTTPS" if any(lis.protocol == "HTTPS" for lis in listeners) else "HTTP")
            certs = sorted(
                {cert for lis in listeners if lis.protocol == "HTTPS" for cert in lis.certificates},
                key=lambda cert: (cert.server_names, cert.cert_pem, cert.key_pem),
            )
            out.append(l7.Listener(
                name=f"{bind[0]}:{bind[1]}", address=bind[0], port=bind[1], protocol=protocol,
                certificates=tuple(certs), virtual_hosts=vhosts,
                client_validation=bind_validation(listeners) if protocol == "HTTPS" else None,
                policy=listener_policy(lis.policy for lis in sorted(listeners,
                                                                    key=lambda x: x.id)),
            ))
        for bind in set(self._bind_sig) - set(binds):
            del self._bind_sig[bind]
        return l7.L7Config(listeners=tuple(out))
