"""TLS termination in the L4 plane (userspace mode), on loopback with real TLS: a
terminated route to a plain TCP echo, re-encryption to a TLS backend (a policy's CA and
hostname, or subjectAltNames), mixed passthrough and terminated routes on one port, and
what fails cleanly (a wrong backend CA, a backend speaking TLS without a policy, an
unusable certificate)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from kgw_l4.config import (
    BackendGroup, BackendTLS, Endpoint, L4Config, ServingCert, SNIRoute, Termination,
    TLSPassthrough,
)
from kgw_l4.plane import open_plane
from kgw_l4.tlsterm import san_ok, select_certificate
from tests.l4.test_tlspass import tls_server
from tests.l4.test_userspace import free_port
from tests.l4.tlshelp import make_cert


async def echo_server():
    """A plain TCP echo that first says whether it sees TLS (it never should here)."""
    async def handle(r, w):
        w.write(b"plain\n")
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


def serving(tmp_path, name: str) -> tuple[ServingCert, str]:
    c, k = make_cert(tmp_path, name)
    return ServingCert((name,), c.read_text(), k.read_text()), c.read_text()


def group(port: int, name: str = "g") -> tuple[BackendGroup, ...]:
    return (BackendGroup(name, 1, (Endpoint("127.0.0.1", port),)),)


async def talk(port: int, sni: str, ca_pem: str | None,
               payload: bytes = b"ping\n") -> tuple[str, bytes, dict]:
    """(first line, echo of payload, server certificate) over TLS verified against ca_pem."""
    if ca_pem is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cadata=ca_pem)
    r, w = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=sni), 10)
    try:
        line = (await asyncio.wait_for(r.readline(), 10)).decode().strip()
        w.write(payload)
        await w.drain()
        echo = await asyncio.wait_for(r.readexactly(len(payload)), 10)
        cert = w.get_extra_info("peercert") or {}
        return line, echo, cert
    finally:
        w.close()


async def plane_with(cfg: L4Config):
    plane = await open_plane("userspace")
    await plane.apply(cfg)
    assert plane.errors() == {}
    return plane


async def test_terminates_and_forwards_plain_tcp(tmp_path):
    srv, bport = await echo_server()
    cert, ca = serving(tmp_path, "app.example.com")
    port = free_port()
    route = SNIRoute("ns/app", ("app.example.com",), group(bport), "ns/gw", "tls",
                     terminate=Termination((cert,)))
    plane = await plane_with(
        L4Config(tls_passthrough=(TLSPassthrough("t", "127.0.0.1", port, (route,)),)))
    try:
        line, echo, peer = await talk(port, "app.example.com", ca, b"x" * 200_000)
        assert line == "plain" and echo == b"x" * 200_000
        assert ("DNS", "app.example.com") in peer["subjectAltName"]
        st = plane.stats()
        fe = next(f for f in st.frontends if f.route == "ns/app")
        assert fe.flows == 1 and fe.bytes is not None and fe.bytes[0] >= 200_000
    finally:
        await plane.close()
        srv.close()


async def test_mixed_mode_one_port(tmp_path):
    """A passthrough and a terminated route on one port: the SNI decides."""
    plain, pport = await echo_server()
    tls_srv, tport = await tls_server(tmp_path, "pass.example.com")
    cert, ca = serving(tmp_path, "term.example.com")
    port = free_port()
    cfg = L4Config(tls_passthrough=(TLSPassthrough("t", "127.0.0.1", port, (
        SNIRoute("ns/pass", ("pass.example.com",), group(tport), "ns/gw", "passthrough"),
        SNIRoute("ns/term", ("term.example.com",), group(pport), "ns/gw", "terminate",
                 terminate=Termination((cert,))),
    )),))
    plane = await plane_with(cfg)
    try:
        line, _, _ = await talk(port, "term.example.com", ca)
        assert line == "plain"  # kgw's certificate, decrypted to the plain echo
        line, _, peer = await talk(port, "pass.example.com", None)
        assert line == "pass.example.com"  # the backend's own TLS, passed through
    finally:
        await plane.close()
        plain.close()
        tls_srv.close()


async def test_reencrypts_with_backend_tls(tmp_path):
    tls_srv, tport = await tls_server(tmp_path, "backend.internal")
    backend_ca = (tmp_path / "backend.internal.crt").read_text()
    cert, ca = serving(tmp_path, "app.example.com")
    port = free_port()

    def cfg(tls: BackendTLS) -> L4Config:
        g = group(tport, "ns/backend:8443")
        return L4Config(tls_passthrough=(TLSPassthrough("t", "127.0.0.1", port, (
            SNIRoute("ns/app", ("app.example.com",), g,
                     terminate=Termination((cert,), (("ns/backend:8443", tls),))),
        )),))

    plane = await plane_with(cfg(BackendTLS("backend.internal", backend_ca)))
    try:
        line, echo, _ = await talk(port, "app.example.com", ca)
        assert (line, echo) == ("backend.internal", b"ping\n")
        # subjectAltNames: the certificate must carry one of them
        await plane.apply(cfg(BackendTLS("x.internal", backend_ca, ("backend.internal",))))
        line, _, _ = await talk(port, "app.example.com", ca)
        assert line == "backend.internal"
        await plane.apply(cfg(BackendTLS("x.internal", backend_ca, ("other.internal",))))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError, ValueError)):
            await talk(port, "app.example.com", ca)
        # a CA that did not sign the backend's certificate: the backend is refused
        _, other_ca = serving(tmp_path, "other.example.com")
        await plane.apply(cfg(BackendTLS("backend.internal", other_ca)))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError, ValueError)):
            await talk(port, "app.example.com", ca)
        fe = next(f for f in plane.stats().frontends if f.route == "ns/app")
        assert fe.drops.get("backend_tls") == 2
    finally:
        await plane.close()
        tls_srv.close()


async def test_tls_backend_without_policy_gets_cleartext(tmp_path):
    """Documented behaviour: with no BackendTLSPolicy kgw sends the decrypted bytes as
    they are; a backend that expects TLS sees no ClientHello and closes, and the client
    sees its connection closed after a completed handshake with kgw."""
    tls_srv, tport = await tls_server(tmp_path, "backend.internal")
    cert, ca = serving(tmp_path, "app.example.com")
    port = free_port()
    plane = await plane_with(L4Config(tls_passthrough=(TLSPassthrough("t", "127.0.0.1", port, (
        SNIRoute("ns/app", ("app.example.com",), group(tport), terminate=Termination((cert,))),)),
                                                       )))
    try:
        ctx = ssl.create_default_context(cadata=ca)
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                             server_hostname="app.example.com")
        w.write(b"hello backend\n")
        assert await asyncio.wait_for(r.read(100), 10) == b""
        w.close()
    finally:
        await plane.close()
        tls_srv.close()


async def test_unusable_certificate_is_a_counted_drop(tmp_path):
    srv, bport = await echo_server()
    cert, ca = serving(tmp_path, "app.example.com")
    _, other_key = serving(tmp_path, "other.example.com")
    bad = ServingCert(("app.example.com",), cert.cert_pem,
                      (tmp_path / "other.example.com.key").read_text())
    port = free_port()
    plane = await plane_with(L4Config(tls_passthrough=(TLSPassthrough("t", "127.0.0.1", port, (
        SNIRoute("ns/app", ("app.example.com",), group(bport), terminate=Termination((bad,))),)),)))
    try:
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            await talk(port, "app.example.com", ca)
        fe = next(f for f in plane.stats().frontends if f.route == "ns/app")
        assert fe.drops == {"bad_certificate": 1}
    finally:
        await plane.close()
        srv.close()


def test_select_certificate():
    a = ServingCert(("a.example.com",), "A", "k")
    w = ServingCert(("*.example.com",), "W", "k")
    any_ = ServingCert(("*",), "ANY", "k")
    assert select_certificate((w, a, any_), "a.example.com") is a
    assert select_certificate((any_, w, a), "b.example.com") is w
    assert select_certificate((any_, a), "b.example.com") is any_
    assert select_certificate((a,), None) is a
    assert select_certificate((), "a.example.com") is None


def test_san_ok():
    cert = {"subjectAltName": (("DNS", "*.svc.internal"), ("URI", "spiffe://td/ns/app"))}
    assert san_ok(cert, ("db.svc.internal",))
    assert not san_ok(cert, ("a.b.svc.internal",))
    assert san_ok(cert, ("spiffe://td/ns/app",))
    assert not san_ok(cert, ("spiffe://td/ns/other",))
