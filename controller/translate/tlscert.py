"""Checks that a Secret holds a usable serving certificate and matching key, and lists
the certificates the Gateways serve with their validity.

Uses ``cryptography`` to parse; results are cached by content since the same Secret is
re-checked on every translation. Validity is recorded, not judged: whether a certificate
has expired depends on when one asks (controller/certexpiry.py asks, for metrics and
status), and translation stays a pure function of its inputs.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.objects import ObjectKey, Obj
from controller.translate.ir import GatewayIR
from controller.translate.util import as_dict, as_str


@dataclass(frozen=True, slots=True)
class ServedCertificate:
    """A certificate an HTTPS listener serves, and when it is valid."""

    #: The object whose status lists the listener: its Gateway, or its ListenerSet.
    owner: ObjectKey
    gateway: str  # "ns/name" of the Gateway
    listener: str
    secret: str  # "ns/name"
    not_before: float  # Unix time
    not_after: float


def served(gateways: Iterable[GatewayIR]) -> tuple[ServedCertificate, ...]:
    """Every certificate of every programmed HTTPS listener of accepted Gateways."""
    out = []
    for g in gateways:
        if not g.accepted:
            continue
        for lis in g.listeners:
            if not lis.programmed:
                continue
            for cert, secret in zip(lis.certificates, lis.certificate_secrets):
                v = validity(cert.cert_pem)
                if v is not None:
                    out.append(ServedCertificate(lis.owner, f"{g.key.namespace}/{g.key.name}",
                                                 lis.name, secret, *v))
    return tuple(out)


def secret_value(secret: Obj, key: str) -> str | None:
    """A Secret entry as text: ``data`` is base64, ``stringData`` is plain."""
    data = as_dict(secret.get("data"))
    if key in data:
        try:
            return base64.b64decode(as_str(data[key]), validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
    sdata = as_dict(secret.get("stringData"))
    if key in sdata:
        return as_str(sdata[key]) or None
    return None


@lru_cache(maxsize=1024)
def check_pair(cert_pem: str, key_pem: str) -> str | None:
    """None if the PEM chain and key are usable together, else why not."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as e:
        return f"certificate does not parse: {e}"
    if not certs:
        return "no certificate in tls.crt"
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as e:
        return f"private key does not parse: {e}"
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if certs[0].public_key().public_bytes(enc, pub) != key.public_key().public_bytes(enc, pub):
        return "private key does not match the certificate"
    return None


@lru_cache(maxsize=1024)
def validity(cert_pem: str) -> tuple[float, float] | None:
    """(notBefore, notAfter) of the first certificate of a PEM chain, the one a client
    checks against its clock, as Unix timestamps; None if it does not parse."""
    try:
        cert = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except (ValueError, IndexError):
        return None
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp()


@lru_cache(maxsize=1024)
def dns_names(cert_pem: str) -> tuple[str, ...]:
    """The DNS names (subjectAltName) of the first certificate of a PEM chain, lower
    case: the names a client may reuse a connection made with it for."""
    try:
        cert = x509.load_pem_x509_certificates(cert_pem.encode())[0]
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, IndexError, x509.ExtensionNotFound):
        return ()
    return tuple(sorted({n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)}))


@lru_cache(maxsize=1024)
def check_ca_bundle(pem: str) -> str | None:
    """None if ``pem`` holds at least one parseable certificate."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as e:
        return f"CA certificate does not parse: {e}"
    return None if certs else "no certificate in the bundle"


def tls_secret(secret: Obj) -> tuple[str, str] | str:
    """(cert, key) PEM of a kubernetes.io/tls Secret, or why it is unusable."""
    stype = as_str(secret.get("type"), "Opaque")
    if stype != "kubernetes.io/tls":
        return f"Secret type is {stype!r}, not 'kubernetes.io/tls'"
    cert, key = secret_value(secret, "tls.crt"), secret_value(secret, "tls.key")
    if not cert or not key:
        return "Secret lacks tls.crt or tls.key"
    problem = check_pair(cert, key)
    return problem if problem else (cert, key)
