"""Listener condition OverlappingTLSConfig (GEP-3567): which listeners get it, with which
reason (table)."""

from __future__ import annotations

import pytest

from controller.objects import ObjectKey
from controller.translate import translate
from tests.translate.tlsgen import self_signed, tls_secret
from tests.translate.worlds import CLASS, gateway, store_of

FOO = self_signed("foo.example.com", ("foo.example.com",))
WILD = self_signed("wild.example.com", ("*.example.com",))
OTHER = self_signed("other.test", ("other.test",))
SECRETS = [tls_secret("foo", "default", *FOO), tls_secret("wild", "default", *WILD),
           tls_secret("other", "default", *OTHER)]


def https(name: str, hostname: str | None, secret: str, port: int = 443) -> dict:
    lis = {"name": name, "port": port, "protocol": "HTTPS",
           "tls": {"certificateRefs": [{"name": secret}]}}
    if hostname:
        lis["hostname"] = hostname
    return lis


def overlap(listeners: list[dict]) -> dict[str, str | None]:
    t = translate(store_of([CLASS, *SECRETS, gateway("gw", listeners)]))
    out = {}
    for lis in t.statuses[ObjectKey("Gateway", "default", "gw")]["listeners"]:
        cond = next((x for x in lis["conditions"] if x["type"] == "OverlappingTLSConfig"), None)
        assert cond is None or cond["status"] == "True", "negative polarity: never False"
        out[lis["name"]] = cond["reason"] if cond else None
    return out


CASES = [
    # the GEP's example: a wildcard listener and an exact one under it, each its own certificate
    ([https("foo", "foo.example.com", "foo"), https("wild", "*.example.com", "wild")],
     {"foo": "OverlappingCertificates", "wild": "OverlappingCertificates"}),
    # overlapping hostnames, certificates for unrelated names
    ([https("foo", "foo.example.com", "other"), https("wild", "*.example.com", "foo")],
     {"foo": "OverlappingHostnames", "wild": "OverlappingHostnames"}),
    # a listener without hostname overlaps every other on its port
    ([https("any", None, "other"), https("foo", "foo.example.com", "foo")],
     {"any": "OverlappingHostnames", "foo": "OverlappingHostnames"}),
    # disjoint hostnames, disjoint certificates: none
    ([https("foo", "foo.example.com", "foo"), https("bar", "bar.test", "other")],
     {"foo": None, "bar": None}),
    # disjoint hostnames, one wildcard certificate valid for both: a client may coalesce
    ([https("foo", "foo.example.com", "wild"), https("bar", "bar.example.com", "wild")],
     {"foo": "OverlappingCertificates", "bar": "OverlappingCertificates"}),
    # other ports do not overlap
    ([https("foo", "foo.example.com", "foo"), https("wild", "*.example.com", "wild", port=8443)],
     {"foo": None, "wild": None}),
    # plain HTTP listeners have no TLS to overlap
    ([{"name": "http", "port": 443, "protocol": "HTTP"}, https("foo", "foo.example.com", "foo")],
     {"http": None, "foo": None}),
]


@pytest.mark.parametrize("listeners,want", CASES, ids=[str(i) for i in range(len(CASES))])
def test_overlapping_tls_config(listeners, want) -> None:
    assert overlap(listeners) == want


def test_message_names_the_other_listener() -> None:
    t = translate(store_of([CLASS, *SECRETS, gateway("gw", [https("foo", "foo.example.com", "foo"),
                                                            https("wild", "*.example.com",
                                                                  "wild")])]))
    foo = next(x for x in t.statuses[ObjectKey("Gateway", "default", "gw")]["listeners"]
               if x["name"] == "foo")
    msg = next(x for x in foo["conditions"] if x["type"] == "OverlappingTLSConfig")["message"]
    assert "wild (*.example.com)" in msg and "421" in msg
