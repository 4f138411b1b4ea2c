"""Requests as upstream's Go client makes them (upstream-go/http/http.go): Host header
set to the host under test, sent to the address the Ingress status shows, redirects
followed by hand to the same address, the server certificate captured (not verified),
``User-Agent: Go-http-client/1.1``."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

TIMEOUT_S = 10.0  # upstream's HTTPClientTimeout
MAX_REDIRECTS = 10
USER_AGENT = "Go-http-client/1.1"


@dataclass
class Captured:
    status: int
    proto: str
    headers: dict[str, list[str]]
    #: The echo server's JSON (empty when the body was not JSON).
    request: dict[str, Any] = field(default_factory=dict)
    certificate: x509.Certificate | None = None
    tls_hostname: str = ""


def canonical(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: content-length -> Content-Length."""
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def round_trip(method: str, scheme: str, host: str, path: str, address: str,
               ports: dict[str, int], redirects: int = 0) -> Captured:
    port = ports[scheme]
    conn = http.client.HTTPConnection(address, port, timeout=TIMEOUT_S)
    tls: ssl.SSLSocket | None = None
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection((address, port), timeout=TIMEOUT_S)
        # SNI is the host under test (Go sets ServerName), not the address dialled.
        conn.sock = tls = ctx.wrap_socket(raw, server_hostname=host or None)
    try:
        conn.putrequest(method, "/" + path.lstrip("/"), skip_host=True,
                        skip_accept_encoding=True)
        conn.putheader("Host", host or address)
        conn.putheader("User-Agent", USER_AGENT)
        if method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        headers: dict[str, list[str]] = {}
        for k, v in resp.getheaders():
            headers.setdefault(canonical(k), []).append(v)
        cert = None
        if tls is not None:
            der = tls.getpeercert(binary_form=True)
            cert = x509.load_der_x509_certificate(der) if der else None
    finally:
        conn.close()
    if resp.status in (301, 302, 303, 307, 308) and redirects < MAX_REDIRECTS:
        loc = urlsplit(resp.getheader("Location") or "")
        return round_trip(method, loc.scheme or scheme, loc.hostname or host, loc.path,
                          address, ports, redirects + 1)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    names: list[str] = []
    if cert is not None:
        try:
            names = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
    return Captured(resp.status, f"HTTP/{resp.version // 10}.{resp.version % 10}", headers,
                    doc if isinstance(doc, dict) else {}, cert, names[0] if names else "")


def verify_hostname(cert: x509.Certificate, hostname: str) -> bool:
    """Go's Certificate.VerifyHostname for DNS names (a wildcard covers one label)."""
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return False
    host = hostname.lower().rstrip(".")
    for n in names:
        n = n.lower()
        if n == host:
            return True
        if n.startswith("*.") and "." in host and host.split(".", 1)[1] == n[2:]:
            return True
    return False
