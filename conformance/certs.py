"""The Secrets and ConfigMaps upstream's suite creates at setup (certificates), made here.

Upstream (conformance/utils/suite Setup, kubernetes/certificate.go) creates self-signed
serving certificates, a CA with CA-signed serving and client certificates, and CA
bundles in ConfigMaps. The names, namespaces and SANs below are upstream's.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

INFRA = "gateway-conformance-infra"
APP = "gateway-conformance-app-backend"
WEB = "gateway-conformance-web-backend"


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _sans(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if "://" in h:
                names.append(x509.UniformResourceIdentifier(h))
            else:
                names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def _builder(subject: str, issuer: x509.Name | None, public_key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365)))


def self_signed(hosts: list[str]) -> KeyPair:
    """A self-signed serving certificate for ``hosts`` that is also its own trust anchor."""
    key = _key()
    cert = (_builder(hosts[0] if hosts else "kgw-conformance", None, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                         key_cert_sign=True,
                                         content_commitment=False, data_encipherment=False,
                                         key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_sans(hosts), critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


@dataclass(frozen=True)
class CA:
    pair: KeyPair
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def new(cls, name: str) -> CA:
        key = _key()
        cert = (_builder(name, None, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                             key_cert_sign=True,
                                             content_commitment=False, data_encipherment=False,
                                             key_agreement=False,
                                             crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)), key, cert)

    def issue(self, hosts: list[str], *, client: bool = False) -> KeyPair:
        key = _key()
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (_builder(hosts[0] if hosts else "client", self.cert.subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if hosts:
            builder = builder.add_extension(_sans(hosts), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def tls_secret(namespace: str, name: str, pair: KeyPair) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(pair.cert_pem).decode(),
                     "tls.key": base64.b64encode(pair.key_pem).decode()}}


def ca_config_map(namespace: str, name: str, ca: CA) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"ca.crt": ca.pair.cert_pem.decode()}}


@dataclass
class SuiteCertificates:
    """Everything generated, kept so that clients can trust or present the same material."""

    objects: list[dict[str, Any]]
    pairs: dict[tuple[str, str], KeyPair]  # (namespace, secret name) -> key pair
    #: (namespace, ConfigMap name) -> the CA certificate (PEM) its ca.crt holds
    cas: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def pair(self, namespace: str, name: str) -> KeyPair:
        return self.pairs[(namespace, name)]

    def ca(self, namespace: str, name: str) -> bytes:
        return self.cas[(namespace, name)]


def generate() -> SuiteCertificates:
    pairs: dict[tuple[str, str], KeyPair] = {}
    objects: list[dict[str, Any]] = []

    def secret(ns: str, name: str, pair: KeyPair) -> None:
        pairs[(ns, name)] = pair
        objects.append(tls_secret(ns, name, pair))

    secret(WEB, "certificate", self_signed(["*"]))
    secret(INFRA, "tls-validity-checks-certificate", self_signed(["*", "*.org", "*.wildcard.org"]))

    backend_ca = CA.new("backend-tls-checks-ca")
    objects.append(ca_config_map(INFRA, "tls-checks-ca-certificate", backend_ca))
    cas = {(INFRA, "tls-checks-ca-certificate"): backend_ca.pair.cert_pem}
    secret(INFRA, "tls-checks-certificate", backend_ca.issue(
        ["abc.example.com", "spiffe://abc.example.com/test-identity", "other.example.com"]))
    secret(INFRA, "tls-checks-client-certificate",
           backend_ca.issue(["client.example.com"], client=True))
    # As upstream (suite.go): the TLS tcp-backend's and the Terminate listeners'
    # certificates are issued by that CA, which the TLSRoute tests trust (caString).
    secret(INFRA, "tls-passthrough-checks-certificate", backend_ca.issue(["abc.example.com"]))
    secret(APP, "tls-passthrough-checks-certificate", backend_ca.issue(["abc.example.com"]))
    secret(INFRA, "tls-terminate-checks-certificate", backend_ca.issue(["tls.example.com"]))
    objects.append(ca_config_map(INFRA, "mismatch-ca-certificate", CA.new("mismatch-ca")))

    client_ca = CA.new("tls-validity-checks-ca")
    objects.append(ca_config_map(INFRA, "tls-validity-checks-ca-certificate", client_ca))
    secret(INFRA, "tls-validity-checks-client-certificate", client_ca.issue([], client=True))
    per_port_ca = CA.new("tls-validity-checks-per-port-ca")
    objects.append(ca_config_map(INFRA, "tls-validity-checks-per-port-ca-certificate", per_port_ca))
    secret(INFRA, "tls-validity-checks-per-port-client-certificate",
           per_port_ca.issue([], client=True))
    return SuiteCertificates(objects, pairs, cas)
