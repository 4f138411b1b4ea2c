"""TLS termination for the TLSRoutes of Terminate listeners: the TLS port's SNI reader
(kgw_l4.tlspass) picked the route; here the connection's TLS is terminated with the
listener's certificate, and the decrypted stream copied to the chosen backend, in
clear or re-encrypted (a BackendTLSPolicy).

Why here, in the L4 plane's userspace relay, and not in the L7 proxy: a TLS port routes
by the ClientHello's SNI before any TLS is spoken, and one port may hold passthrough and
terminated routes (mixed mode); the SNI reader and its listener are the L4 plane's, in
every L4 mode. The hello is still unread in the socket when this module takes it over.

The TLS runs in the event loop's TLS transport (OpenSSL, through ``ssl`` memory BIOs), so
each byte is decrypted into userspace and written to the backend socket, chunk by chunk
from the transports' callbacks (kgw_l4.relay). Kernel TLS (kTLS)
would let the kernel decrypt and splice; it needs the kernel's ``tls`` module, which the
hosts kgw was measured on lack (bench/results/tlsterm.md), so there is no kTLS path.

Contexts: no ALPN is offered or chosen (the stream is opaque to kgw: HTTP's ALPN,
which kgw_l7 offers, would be a claim about the backend). The TLS versions and TLS 1.2
suites are kgw_l7's (``kgw_l7.tls.CIPHERS_TLS12``), one policy for both planes. Contexts
are cached by certificate and by backend TLS settings, and forgotten with the last
route using them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import tempfile
from typing import TYPE_CHECKING, Any

from kgw_l7.tls import CIPHERS_TLS12

from .config import BackendTLS, L4Config, ServingCert, SNIRoute
from .metrics import Tally
from . import relay
from .userspace import Conn, connect_backend

if TYPE_CHECKING:
    from .flowlog import FlowLog

log = logging.getLogger("kgw.l4.tlsterm")

HANDSHAKE_TIMEOUT = 10.0


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """ssl loads key material only from files: both go to a private temp dir, at once
    removed."""
    with tempfile.TemporaryDirectory(prefix="kgw-l4-tls-") as d:
        paths = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
        for path, data in zip(paths, (cert_pem, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)
        ctx.load_cert_chain(*paths)


def server_context(cert: ServingCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS_TLS12)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(ctx, cert.cert_pem, cert.key_pem)
    return ctx


def client_context(tls: BackendTLS) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=tls.ca_pem or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.subject_alt_names:
        ctx.check_hostname = False  # the names are checked after the handshake (san_ok)
    if tls.client_cert_pem and tls.client_key_pem:
        _load_chain(ctx, tls.client_cert_pem, tls.client_key_pem)
    return ctx


def san_ok(cert: dict[str, Any], names: tuple[str, ...]) -> bool:
    """Does the peer certificate carry one of ``names`` (DNS names, "*." wildcards in the
    certificate, or URIs such as SPIFFE IDs, compared exactly)?"""
    sans = cert.get("subjectAltName", ())
    uris = {v for k, v in sans if k == "URI"}
    dns = [v.lower() for k, v in sans if k == "DNS"]
    for want in names:
        if ":" in want:
            if want in uris:
                return True
            continue
        want = want.lower()
        for have in dns:
            if have == want or (have.startswith("*.") and want.endswith(have[1:])
                                and want.count(".") == have.count(".")):
                return True
    return False


def select_certificate(certs: tuple[ServingCert, ...], sni: str | None) -> ServingCert | None:
    """The certificate for ``sni``: an exact name, then the longest wildcard, then "*";
    else the listener's first (the SNI already chose this listener by its hostname)."""
    name = (sni or "").lower()
    best: tuple[int, ServingCert] | None = None
    for cert in certs:
        for n in cert.server_names:
            if name and n == name:
                return cert
            if n.startswith("*.") and name.endswith(n[1:]) and len(name) > len(n) - 1:
                if best is None or len(n) > best[0]:
                    best = (len(n), cert)
            elif n == "*" and best is None:
                best = (0, cert)
    if best is not None:
        return best[1]
    return certs[0] if certs else None


class Contexts:
    """Loaded contexts; one that fails to load is logged once and counted as a drop
    (``bad_certificate``, ``bad_backend_tls``) for each connection that needs it."""

    def __init__(self) -> None:
        self._server: dict[ServingCert, ssl.SSLContext | None] = {}
        self._client: dict[BackendTLS, ssl.SSLContext | None] = {}

    def server(self, cert: ServingCert) -> ssl.SSLContext | None:
        if cert not in self._server:
            try:
                self._server[cert] = server_context(cert)
            except (ssl.SSLError, ValueError, OSError) as e:
                log.error("TLS terminate: certificate for %s unusable: %s",
                          ",".join(cert.server_names), e)
                self._server[cert] = None
        return self._server[cert]

    def client(self, tls: BackendTLS) -> ssl.SSLContext | None:
        if tls not in self._client:
            try:
                self._client[tls] = client_context(tls)
            except (ssl.SSLError, ValueError, OSError) as e:
                log.error("TLS terminate: backend TLS for %s unusable: %s", tls.hostname, e)
                self._client[tls] = None
        return self._client[tls]

    def retain(self, config: L4Config) -> None:
        """Forget the contexts no route of ``config`` uses."""
        certs: set[ServingCert] = set()
        tls: set[BackendTLS] = set()
        for t in config.tls_passthrough:
            for r in t.routes:
                if r.terminate is not None:
                    certs.update(r.terminate.certificates)
                    tls.update(b for _, b in r.terminate.backend_tls)
        self._server = {k: v for k, v in self._server.items() if k in certs}
        self._client = {k: v for k, v in self._client.items() if k in tls}


def backend_tls(route: SNIRoute, be: tuple[str, int]) -> BackendTLS | None:
    """The TLS to endpoint ``be`` of the route: its group's, if the group has a policy."""
    assert route.terminate is not None
    by_group = dict(route.terminate.backend_tls)
    for g in route.backends:
        if g.name in by_group and any((ep.address, ep.port) == be for ep in g.endpoints):
            return by_group[g.name]
    return None


async def accept_tls(c: socket.socket, ctx: ssl.SSLContext, side: relay.Side) -> None:
    """The server side of the TLS handshake on accepted socket ``c`` (its ClientHello
    still unread), its transport given to ``side``. Raises on a failed or timed-out
    handshake."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(HANDSHAKE_TIMEOUT + 1):
        await loop.connect_accepted_socket(lambda: side, sock=c, ssl=ctx,
                                           ssl_handshake_timeout=HANDSHAKE_TIMEOUT)


async def connect_tls(b: socket.socket, ctx: ssl.SSLContext, tls: BackendTLS,
                      side: relay.Side) -> None:
    """The client side of TLS to a backend on connected socket ``b``, its certificate
    checked against the policy's CAs and hostname (or subjectAltNames), its transport
    given to ``side``."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(HANDSHAKE_TIMEOUT + 1):
        transport, _ = await loop.create_connection(
            lambda: side, sock=b, ssl=ctx, server_hostname=tls.hostname,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
    if tls.subject_alt_names:
        sslobj = transport.get_extra_info("ssl_object")
        cert = sslobj.getpeercert() if sslobj is not None else None
        if not cert or not san_ok(cert, tls.subject_alt_names):
            transport.abort()
            names = ", ".join(tls.subject_alt_names)
            raise ssl.SSLError(f"backend certificate carries none of {names}")


class Terminator:
    """Serves the connections whose SNI picked a terminated route."""

    def __init__(self) -> None:
        self.contexts = Contexts()

    def apply(self, config: L4Config) -> None:
        self.contexts.retain(config)

    async def serve(self, c: socket.socket, sni: str | None, route: SNIRoute, be: tuple[str, int],
                    tally: Tally, be_tally: Tally | None, frontend: str, conns: set[Conn],
                    flog: FlowLog | None = None, listener: str = "",
                    source: tuple[str, int] | None = None,
                    local: tuple[str, int] | None = None) -> None:
        """Terminate ``c``'s TLS, connect to ``be`` and copy both ways. Owns ``c``.
        ``flog``: the flow log, ``listener`` the name its lines carry; ``source`` and
        ``local``: the connection's ends as a PROXY header named them (else the
        socket's), for the flow log and the header the backend may ask for."""
        assert route.terminate is not None
        peer = source or c.getpeername()[:2]
        local = local or c.getsockname()[:2]
        cert = select_certificate(route.terminate.certificates, sni)
        ctx = self.contexts.server(cert) if cert is not None else None
        if ctx is None:
            tally.drop("bad_certificate")
            if flog is not None:
                flog.refused(listener, route.name, peer[:2], "DTF")
            c.close()
            return
        client = relay.Side()
        try:
            await accept_tls(c, ctx, client)
        except (ssl.SSLError, OSError, TimeoutError) as e:
            log.info("TLS terminate %s: handshake with %s:%d failed: %s",
                     frontend, peer[0], peer[1], e)
            tally.drop("tls_handshake")
            if flog is not None:
                flog.refused(listener, route.name, peer[:2], "DTF")
            client.abort()
            c.close()
            return
        tls = backend_tls(route, be)
        try:
            # (the PROXY header in clear, ahead of the backend's TLS if it has a
            # BackendTLSPolicy)
            b = await connect_backend(be, (peer, local) if route.backend_proxy_protocol
                                      else None)
        except (OSError, TimeoutError) as e:
            log.info("backend %s:%d unreachable: %s", be[0], be[1], e)
            tally.drop("backend_unreachable")
            if flog is not None:
                flog.refused(listener, route.name, peer[:2], "UF", be)
            client.abort()
            return
        backend = relay.Side()
        try:
            if tls is None:
                await asyncio.get_running_loop().create_connection(lambda: backend, sock=b)
            else:
                cctx = self.contexts.client(tls)
                if cctx is None:
                    raise ssl.SSLError("backend TLS settings unusable")
                await connect_tls(b, cctx, tls, backend)
        except (ssl.SSLError, OSError, TimeoutError) as e:
            log.info("TLS terminate %s: TLS to backend %s:%d failed: %s", frontend, be[0], be[1], e)
            tally.drop("backend_tls")
            if flog is not None:
                flog.refused(listener, route.name, peer[:2], "UF", be)
            backend.abort()
            b.close()
            client.abort()
            return
        tally.flows += 1
        if be_tally is not None:
            be_tally.flows += 1
        conn = Conn(frontend, peer, be, tally, be_tally)
        client.count, backend.count = conn.to_backend, conn.to_client
        tally.active += 1
        conns.add(conn)
        flow = flog.opened(listener, route.name, peer[:2], be) if flog is not None else None
        try:
            relay.link(client, backend)
            await relay.run(client, backend)
        finally:
            tally.active -= 1
            conns.discard(conn)
            if flog is not None and flow is not None:
                flog.closed(flow, conn.bytes[0], conn.bytes[1])
