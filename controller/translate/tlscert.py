"""Checks that a Secret holds a usable serving certificate and matching key.

Uses ``cryptography`` to parse; results are cached by content since the same Secret is
re-checked on every translation.
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller.objects import Obj
from controller.translate.util import as_dict, as_str


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
