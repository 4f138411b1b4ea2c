"""Self-signed certificates for tests (what the upstream suite generates at setup)."""

from __future__ import annotations

import base64
import datetime
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


FROM = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@cache
def self_signed(cn: str = "example.com", sans: tuple[str, ...] = ("*.example.com", "example.com"),
                not_before: datetime.datetime = FROM,
                not_after: datetime.datetime = FROM + datetime.timedelta(days=3650)) -> tuple[str,
                                                                                              str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem


def tls_secret(name: str, namespace: str, cert_pem: str | None = None,
               key_pem: str | None = None) -> dict:
    if cert_pem is None or key_pem is None:
        cert_pem, key_pem = self_signed()
    b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem)}}


def ca_configmap(name: str, namespace: str, pem: str | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"ca.crt": pem if pem is not None else self_signed()[0]}}
