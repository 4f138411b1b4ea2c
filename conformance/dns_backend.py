"""The suite's ``coredns`` backend, for UDPRoute: a DNS server answering as CoreDNS would.

Upstream's UDPRoute test runs CoreDNS (``registry.k8s.io/coredns/coredns``) with the
Corefile from the ``coredns`` ConfigMap and resolves ``foo.bar.com.`` through the
Gateway. This stands in for that pod, reading the same Corefile and serving the subset
of it the suite uses, over UDP (the Service's only port):

- server blocks ``ZONE[:PORT] [ZONE...] { plugins }``; a query goes to the block of the
  longest zone its name is in (CoreDNS's rule); no block: REFUSED;
- ``whoami``: the reply is authoritative, has an empty answer section, and carries the
  client's address as an A (or AAAA) record for the query name and ``_udp.<qname>``
  SRV ``0 0 <client port> .`` in the additional section (CoreDNS's whoami plugin);
- ``forward``: the upstreams (public resolvers) are out of reach here, so SERVFAIL, as
  CoreDNS answers when no upstream does;
- ``log``, ``errors``: logging only. Any other plugin is refused at startup rather than
  pretended.

DNS wire format is dnspython's. ``python -m conformance.dns_backend --address A --conf FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
import sys
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

SUPPORTED_PLUGINS = frozenset({"whoami", "forward", "log", "errors"})
DEFAULT_PORT = 53


class CorefileError(ValueError):
    pass


@dataclass(frozen=True)
class ServerBlock:
    zones: tuple[dns.name.Name, ...]
    port: int
    plugins: tuple[str, ...]


def parse_corefile(text: str) -> list[ServerBlock]:
    """Server blocks of a Corefile: the zone keys and the first word of each directive
    (nested blocks, as a plugin's own options, are skipped)."""
    text = re.sub(r"#[^\n]*", "", text)
    tokens = re.findall(r"[{}]|[^\s{}]+|\n", text)
    blocks: list[ServerBlock] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "\n":
            i += 1
            continue
        keys: list[str] = []
        while i < len(tokens) and tokens[i] not in ("{", "}"):
            if tokens[i] != "\n":
                keys.append(tokens[i])
            i += 1
        if i >= len(tokens) or tokens[i] != "{" or not keys:
            raise CorefileError(
                f"expected 'ZONE {{' in the Corefile near {' '.join(keys) or tokens[i:i + 1]}")
        i += 1
        plugins: list[str] = []
        depth, line_start = 1, True
        while i < len(tokens) and depth:
            tok = tokens[i]
            if tok == "{":
                depth += 1
            elif tok == "}":
                depth -= 1
            elif tok == "\n":
                line_start = True
                i += 1
                continue
            elif depth == 1 and line_start:
                plugins.append(tok)
            line_start = False
            i += 1
        if depth:
            raise CorefileError("unbalanced braces in the Corefile")
        zones, ports = [], set()
        for key in keys:
            zone, _, port = key.rpartition(":") if ":" in key else (key, "", "")
            ports.add(int(port) if port else DEFAULT_PORT)
            zones.append(dns.name.from_text(zone or "."))
        if len(ports) != 1:
            raise CorefileError(f"one port per server block: {' '.join(keys)}")
        unknown = sorted(set(plugins) - SUPPORTED_PLUGINS)
        if unknown:
            raise CorefileError(f"plugins not served by this stand-in: {', '.join(unknown)}")
        blocks.append(ServerBlock(tuple(zones), ports.pop(), tuple(plugins)))
    return blocks


class CoreDNSStandIn:
    def __init__(self, blocks: list[ServerBlock]) -> None:
        self.blocks = blocks

    def block_for(self, qname: dns.name.Name) -> ServerBlock | None:
        best: tuple[int, ServerBlock] | None = None
        for b in self.blocks:
            for z in b.zones:
                if qname.is_subdomain(z) and (best is None or len(z) > best[0]):
                    best = (len(z), b)
        return best[1] if best else None

    def answer(self, wire: bytes, client: tuple[str, int]) -> bytes | None:
        """The reply to one datagram from ``client`` (address, port); None to drop it."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not a DNS message: nothing to answer
        reply = dns.message.make_response(query)
        if len(query.question) != 1:
            reply.set_rcode(dns.rcode.FORMERR)
            return reply.to_wire()
        question = query.question[0]
        block = self.block_for(question.name)
        if block is None:
            reply.set_rcode(dns.rcode.REFUSED)
        elif "whoami" in block.plugins:
            reply.flags |= dns.flags.AA
            ip = ipaddress.ip_address(client[0])
            rtype = dns.rdatatype.A if ip.version == 4 else dns.rdatatype.AAAA
            reply.additional.append(
                dns.rrset.from_text(question.name, 0, question.rdclass, rtype, str(ip)))
            srv_name = dns.name.Name((b"_udp",) + question.name.labels)
            reply.additional.append(dns.rrset.from_text(srv_name, 0, question.rdclass,
                                                        dns.rdatatype.SRV, f"0 0 {client[1]} ."))
        else:  # forward to resolvers out of reach
            reply.set_rcode(dns.rcode.SERVFAIL)
        return reply.to_wire()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: CoreDNSStandIn, log: bool) -> None:
        self.server = server
        self.log = log
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        out = self.server.answer(data, (addr[0], addr[1]))
        if self.log:
            print(f"[INFO] {addr[0]}:{addr[1]} query of {len(data)} bytes answered: "
                  f"{out is not None}", flush=True)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)

    def error_received(self, exc: Exception) -> None:
        pass


async def serve(address: str, blocks: list[ServerBlock]) -> None:
    loop = asyncio.get_running_loop()
    server = CoreDNSStandIn(blocks)
    log = any("log" in b.plugins for b in blocks)
    transports = []
    for port in sorted({b.port for b in blocks}):
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(server, log),
                                                           local_addr=(address, port))
        transports.append(transport)
        print(f"serving DNS on {address}:{port}/udp", flush=True)
    try:
        await asyncio.Future()
    finally:
        for t in transports:
            t.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.dns_backend",
                                description=__doc__.splitlines()[0])
    p.add_argument("--address", default="0.0.0.0")
    p.add_argument("--conf", required=True, help="the Corefile (CoreDNS's -conf)")
    args = p.parse_args(argv)
    try:
        with open(args.conf) as f:
            blocks = parse_corefile(f.read())
    except (OSError, CorefileError, ValueError, dns.exception.DNSException) as exc:
        print(f"dns_backend: {args.conf}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.address, blocks))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"dns_backend: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
