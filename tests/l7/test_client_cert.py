"""Client certificate validation (mTLS) on HTTPS listeners, through real handshakes.

Certificates are made with ``cryptography``: two CAs, a client certificate from each,
and serving certificates for two SNI names (validation is per port, so it must hold for
every certificate the SNI callback can pick).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conformance.requests import watch_certificate_request
from kgw_l7 import tls_fallback
from kgw_l7.config import (
    Backend, Certificate, ClientValidation, Endpoint, L7Config, Listener, PathMatch, Route,
    RouteMatch, Rule, VirtualHost,
)

from .conftest import PlaneRunner, eventually, free_port, self_signed

pytestmark = pytest.mark.slow


# -- certificates ---------------------------------------------------------------------------

def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


@dataclass(frozen=True)
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @staticmethod
    def new(name: str) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return CA(cert, key)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def client(self, cn: str) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return _pem(cert, key)


@dataclass(frozen=True)
class Material:
    ca_a: CA
    ca_b: CA
    client_a: tuple[str, str]
    client_b: tuple[str, str]
    self_signed_client: tuple[str, str]
    server_named: tuple[str, str]
    server_default: tuple[str, str]


@pytest.fixture(scope="module")
def material() -> Material:
    a, b = CA.new("client-ca-a"), CA.new("client-ca-b")
    return Material(a, b, a.client("alice"), b.client("bob"), self_signed(["mallory"]),
                    self_signed(["a.example.com"]), self_signed(["default.example.com"]))


# -- plane and client -----------------------------------------------------------------------

def _listener(name: str, port: int, m: Material, echo_port: int,
              validation: ClientValidation | None) -> Listener:
    rule = Rule(name=f"infra/{name}/0", route=f"infra/{name}", gateway="infra/gw",
                backends=(
                    Backend(name="infra/v1:8080", endpoints=(Endpoint("127.0.0.1", echo_port),)),))
    vhost = VirtualHost("*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/")), rule),))
    certs = (Certificate(("a.example.com",), *m.server_named),
             Certificate(("*",), *m.server_default))
    return Listener(name, "127.0.0.1", port, "HTTPS", certs, (vhost,), client_validation=validation)


@pytest.fixture(scope="module")
def runner() -> Iterator[PlaneRunner]:
    r = PlaneRunner(workers=1, access_log="off")
    try:
        yield r
    finally:
        r.close()


def _client_context(cert: tuple[str, str] | None,
                    version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "client.pem")
            with open(path, "w") as f:
                f.write(cert[0] + cert[1])
            ctx.load_cert_chain(path)
    return ctx


def _get(port: int, cert: tuple[str, str] | None, sni: str | None = "a.example.com",
         version: ssl.TLSVersion | None = None, asked: list[bool] | None = None) -> int:
    """One request; returns the status. A refused handshake raises ssl.SSLError (or
    the connection is reset / closed, which raises ConnectionError). With ``asked``,
    True is appended when the server sends a CertificateRequest."""
    ctx = _client_context(cert, version)
    if asked is not None:
        watch_certificate_request(ctx, lambda: asked.append(True))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname=sni) as s:
            host = sni or "default.example.com"  # the Host the SNI's certificate serves
            s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
    if not out:
        raise ConnectionError("closed without a response")
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["pod"].startswith("v1")
    return int(out.split(b" ", 2)[1])


def _refusal(port: int, cert: tuple[str, str] | None, **kw: object) -> str:
    """The error a refused client sees (fails the test if it is served)."""
    try:
        status = _get(port, cert, **kw)  # type: ignore[arg-type]
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    except ConnectionError as exc:
        return type(exc).__name__
    raise AssertionError(f"served with status {status}, expected a refused handshake")


# -- AllowValidOnly -------------------------------------------------------------------------

def test_valid_only_serves_a_client_of_the_ca_on_every_certificate(runner, echoes, material):
    m, port = material, free_port()
    runner.apply(L7Config((_listener("strict", port, m, echoes["v1"].port,
                                     ClientValidation(m.ca_a.pem)),), 1))
    for sni in ("a.example.com", "other.test", None):  # named, default and no SNI
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            assert _get(port, m.client_a, sni=sni, version=version) == 200


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_valid_only_refuses_no_cert_and_foreign_certs(runner, echoes, material, version):
    m, port = material, free_port()
    runner.apply(L7Config((_listener("strict", port, m, echoes["v1"].port,
                                     ClientValidation(m.ca_a.pem)),), 2))
    assert _get(port, m.client_a, version=version) == 200
    for sni in ("a.example.com", "other.test", None):
        # The event loop closes the connection when the handshake fails, so the client
        # sees a TLS error or a closed connection, not always the server's alert.
        _refusal(port, None, sni=sni, version=version)
        _refusal(port, m.client_b, sni=sni, version=version)
        _refusal(port, m.self_signed_client, sni=sni, version=version)
        assert _get(port, m.client_a, sni=sni, version=version) == 200


def test_several_cas_in_one_bundle(runner, echoes, material):
    m, port = material, free_port()
    runner.apply(L7Config((_listener("both", port, m, echoes["v1"].port,
                                     ClientValidation(m.ca_a.pem + m.ca_b.pem)),), 3))
    assert _get(port, m.client_a) == 200
    assert _get(port, m.client_b) == 200
    _refusal(port, m.self_signed_client)


# -- AllowInsecureFallback ------------------------------------------------------------------

def test_insecure_fallback_asks_for_a_certificate_and_serves_every_client(runner, echoes, material):
    """AllowInsecureFallback still requests a client certificate (clients present theirs
    as under AllowValidOnly), but serves one that does not verify, or none; on TLS 1.2
    and 1.3, for a named and the default certificate."""
    m, port = material, free_port()
    runner.apply(L7Config((_listener("fallback", port, m, echoes["v1"].port,
                                     ClientValidation(m.ca_a.pem, "AllowInsecureFallback")),), 4))
    for sni in ("a.example.com", None):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            for cert in (m.client_a, m.client_b, m.self_signed_client, None):
                asked: list[bool] = []
                assert _get(port, cert, sni=sni, version=version, asked=asked) == 200
                assert asked, (
                    f"no certificate request (sni {sni}, {version.name}, cert {cert is not None})")


def test_insecure_fallback_verify_callback_reports_and_accepts():
    """The callback the fallback mode installs: OpenSSL's verdict on a chain that does
    not verify is counted, and the handshake goes on."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls_fallback.install(ctx)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    before = tls_fallback.counters.failed
    assert tls_fallback._on_verify(1, 1) == 1 and tls_fallback.counters.failed == before
    assert tls_fallback._on_verify(0, None) == 1


# -- changes and bad input ------------------------------------------------------------------

def test_validation_changes_apply_to_new_handshakes(runner, echoes, material):
    """Turning validation on, changing its CA and turning it off again take effect on
    the same port from the next handshake."""
    m, port, echo = material, free_port(), echoes["v1"].port
    plain = _listener("p", port, m, echo, None)
    runner.apply(L7Config((plain,), 10))
    assert _get(port, None) == 200
    runner.apply(L7Config((replace(plain, client_validation=ClientValidation(m.ca_a.pem)),), 11))
    eventually(lambda: _refusal(port, None))
    assert _get(port, m.client_a) == 200
    runner.apply(L7Config((replace(plain, client_validation=ClientValidation(m.ca_b.pem)),), 12))
    eventually(lambda: _refusal(port, m.client_a))
    assert _get(port, m.client_b) == 200
    runner.apply(L7Config((plain,), 13))
    eventually(lambda: _get(port, None) == 200)


def test_unusable_ca_bundle_is_never_served_without_validation(runner, echoes, material):
    m, port = material, free_port()
    bad = _listener("bad-ca", port, m, echoes["v1"].port, ClientValidation("not a certificate"))
    good_port = free_port()
    good = _listener("good", good_port, m, echoes["v1"].port, ClientValidation(m.ca_a.pem))
    runner.apply(L7Config((bad, good), 20))
    assert "bad-ca" in runner.plane.listener_errors()
    with pytest.raises(OSError):
        _get(port, m.client_a)
    # The other listener is unaffected.
    assert _get(good_port, m.client_a) == 200


def test_session_resumption_keeps_working(runner, echoes, material):
    """A client with a valid certificate may resume its session (OpenSSL refuses to
    resume under client verification without a session id context)."""
    m, port = material, free_port()
    runner.apply(L7Config((_listener("resume", port, m, echoes["v1"].port,
                                     ClientValidation(m.ca_a.pem)),), 30))
    ctx = _client_context(m.client_a, ssl.TLSVersion.TLSv1_2)
    session = None
    for attempt in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock:
            with ctx.wrap_socket(raw_sock, server_hostname="a.example.com",
                                 session=session) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                assert out.startswith(b"HTTP/1.1 200")
                if attempt == 1:
                    assert s.session_reused
                session = s.session
