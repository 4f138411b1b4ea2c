"""Gateway spec.addresses: what is bound, what status reports, and why not (table)."""

from __future__ import annotations

import pytest

from controller.objects import ObjectKey
from controller.translate import Options, translate
from tests.translate.worlds import CLASS, gateway, store_of

HTTP = {"name": "http", "port": 8080, "protocol": "HTTP"}
LOCAL = ("127.0.0.0/8", "192.0.2.10/32", "::1/128")
RESOLVED = (("gw.example.com", ("192.0.2.10",)), ("far.example.com", ("198.51.100.1",)),
            ("both.example.com", ("127.0.0.9", "198.51.100.1")))
GW = ObjectKey("Gateway", "default", "gw")


def ip(value: str) -> dict:
    return {"type": "IPAddress", "value": value}


def host(value: str) -> dict:
    return {"type": "Hostname", "value": value}


def cond(st: dict, type_: str) -> tuple[str, str]:
    c = next(x for x in st["conditions"] if x["type"] == type_)
    return c["status"], c["reason"]


# addresses -> (Accepted, Programmed, status.addresses, bound listener addresses)
CASES = [
    ([ip("127.1.0.5")], ("True", "Accepted"), ("True", "Programmed"), [ip("127.1.0.5")],
     ["127.1.0.5"]),
    ([ip("192.0.2.10"), ip("::1")], ("True", "Accepted"), ("True", "Programmed"),
     [ip("192.0.2.10"), ip("::1")], ["192.0.2.10", "::1"]),
    ([host("gw.example.com")], ("True", "Accepted"), ("True", "Programmed"),
     [host("gw.example.com")], ["192.0.2.10"]),
    ([host("GW.example.com.")], ("True", "Accepted"), ("True", "Programmed"),
     [host("GW.example.com.")], ["192.0.2.10"]),
    ([ip("198.51.100.1")], ("True", "Accepted"), ("False", "AddressNotUsable"), [], []),
    ([ip("127.1.0.5"), ip("198.51.100.1")], ("True", "Accepted"), ("False", "AddressNotUsable"), [],
     []),
    ([host("far.example.com")], ("True", "Accepted"), ("False", "AddressNotUsable"), [], []),
    ([host("both.example.com")], ("True", "Accepted"), ("False", "AddressNotUsable"), [], []),
    ([host("nowhere.example.com")], ("True", "Accepted"), ("False", "AddressNotUsable"), [], []),
    ([{"type": "test/fake-invalid-type", "value": "fake address teehee!"}, ip("198.51.100.1"),
      ip("127.1.0.5")],
     ("False", "UnsupportedAddress"), ("False", "Invalid"), [], []),
    ([{"type": "NamedAddress", "value": "pool-a"}], ("False", "UnsupportedAddress"),
     ("False", "Invalid"), [], []),
    ([ip("not-an-ip")], ("False", "UnsupportedAddress"), ("False", "Invalid"), [], []),
]


@pytest.mark.parametrize("addresses,accepted,programmed,reported,bound", CASES,
                         ids=[str(i) for i in range(len(CASES))])
def test_spec_addresses(addresses, accepted, programmed, reported, bound) -> None:
    t = translate(store_of([CLASS, gateway("gw", [HTTP], addresses=addresses)]),
                  Options(local_addresses=LOCAL, resolved_hostnames=RESOLVED))
    st = t.statuses[GW]
    assert cond(st, "Accepted") == accepted
    assert cond(st, "Programmed") == programmed
    assert st["addresses"] == reported
    assert sorted(lis.address for lis in t.l7.listeners) == sorted(bound)
    listener_programmed = cond(st["listeners"][0], "Programmed")[0]
    assert listener_programmed == ("True" if bound
                                   else "False"), "a listener bound nowhere is not programmed"


def test_unusable_address_message_names_it() -> None:
    t = translate(store_of(
        [CLASS, gateway("gw", [HTTP], addresses=[ip("198.51.100.1"), host("nowhere.test")])]),
                  Options(local_addresses=LOCAL))
    msg = next(c for c in t.statuses[GW]["conditions"] if c["type"] == "Programmed")["message"]
    assert ("198.51.100.1 is not an address of this node" in msg
            and "nowhere.test does not resolve" in msg)


def test_without_a_view_of_the_node_every_ip_is_usable() -> None:
    t = translate(store_of([CLASS, gateway("gw", [HTTP], addresses=[ip("198.51.100.1")])]),
                  Options())
    assert cond(t.statuses[GW], "Programmed") == ("True", "Programmed")
    assert [lis.address for lis in t.l7.listeners] == ["198.51.100.1"]
