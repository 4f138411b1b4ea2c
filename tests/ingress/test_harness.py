"""The Ingress conformance harness's own pieces (conformance/ingress/): what upstream's Go
code does, checked without running the suite."""

from __future__ import annotations

from cryptography import x509

from conformance.ingress import client
from conformance.ingress.__main__ import PerFeature
from conformance.ingress.world import backends, self_signed, service


def test_go_header_canonical_form() -> None:
    assert client.canonical("content-length") == "Content-Length"
    assert client.canonical("x-ECHO-set-header") == "X-Echo-Set-Header"


def test_hostname_verification_as_go() -> None:
    cert = x509.load_pem_x509_certificate(self_signed(["foo.bar.com", "*.w.com"])[0])
    assert client.verify_hostname(cert, "foo.bar.com")
    assert client.verify_hostname(cert, "a.w.com")
    assert not client.verify_hostname(cert, "a.b.w.com")
    assert not client.verify_hostname(cert, "bar.com")


def test_backends_as_upstream_deploys_them() -> None:
    ing = {"spec": {"defaultBackend": {"service": {"name": "d", "port": {"number": 9}}},
                    "rules": [{"http": {"paths": [
                        {"backend": {"service": {"name": "n", "port": {"name": "http"}}}},
                        {"backend": {"resource": {"kind": "X", "name": "y"}}}]}}]}}
    assert backends(ing) == {"d": ("", 9), "n": ("http", 8080)}
    assert service("ns", "n", "http", 8080)["spec"]["ports"] == [
        {"port": 8080, "targetPort": 3000, "protocol": "TCP", "name": "http"}]


def test_per_feature_counts() -> None:
    class Rep:
        def __init__(self, nodeid: str, when: str, passed: bool) -> None:
            self.nodeid, self.when, self.passed = nodeid, when, passed

    p = PerFeature()
    p.feature.update({"a": "F", "b": "F", "c": "G"})
    for r in (Rep("a", "setup", True), Rep("a", "call", True), Rep("a", "teardown", True),
              Rep("b", "call", False), Rep("c", "call", True), Rep("c", "teardown", False),
              Rep("d", "setup", False)):
        p.pytest_runtest_logreport(r)
    assert p.counts() == {"F": (1, 2), "G": (0, 1), "(not started)": (0, 1)}
