"""SNAT source per backend (kgw_l4.snat) with a table standing in for the kernel's routes."""

from __future__ import annotations

import logging

import pytest

from kgw_l4.netinfo import Route
from kgw_l4.snat import SnatSources


class Routes:
    def __init__(self, table):
        self.table = dict(table)
        self.looked_up: list[str] = []

    def __call__(self, addrs):
        self.looked_up.extend(addrs)
        return {a: self.table.get(a) or OSError("no route (Network is unreachable)") for a in addrs}


def test_each_backend_gets_the_source_of_its_route_looked_up_once(caplog):
    routes = Routes({"10.2.0.5": Route("10.2.0.1", "eth1"), "10.3.0.5": Route("10.3.0.1", "eth2"),
                     "10.2.0.6": Route("10.2.0.1", "eth1")})
    s = SnatSources(lookup=routes)
    caplog.set_level(logging.INFO, "kgw.l4.snat")
    assert s.resolve(["10.2.0.5", "10.3.0.5", "10.2.0.6"]) == {"10.2.0.5", "10.3.0.5", "10.2.0.6"}
    assert (s("10.2.0.5"), s("10.3.0.5"), s("10.2.0.6")) == ("10.2.0.1", "10.3.0.1", "10.2.0.1")
    assert s.resolve(["10.2.0.5", "10.3.0.5"]) == set()
    assert routes.looked_up == ["10.2.0.5", "10.2.0.6", "10.3.0.5"]
    assert [r.message for r in caplog.records] == [
        "SNAT source 10.2.0.1 (route via eth1) for backends 10.2.0.5, 10.2.0.6",
        "SNAT source 10.3.0.1 (route via eth2) for backend 10.3.0.5"]


def test_looking_again_logs_only_what_changed(caplog):
    routes = Routes({"10.2.0.5": Route("10.2.0.1", "eth1"), "10.3.0.5": Route("10.3.0.1", "eth2")})
    s = SnatSources(lookup=routes)
    s.resolve(["10.2.0.5", "10.3.0.5"])
    caplog.set_level(logging.INFO, "kgw.l4.snat")
    routes.table["10.3.0.5"] = Route("10.3.0.9", "eth2")
    assert s.resolve(["10.2.0.5", "10.3.0.5"], again=True) == {"10.3.0.5"}
    assert s("10.3.0.5") == "10.3.0.9"
    del routes.table["10.2.0.5"]
    assert s.resolve(["10.2.0.5", "10.3.0.5"], again=True) == {"10.2.0.5"}
    with pytest.raises(OSError, match="no route"):
        s("10.2.0.5")
    assert [r.message for r in caplog.records] == [
        "SNAT source 10.3.0.9 (route via eth2) for backend 10.3.0.5",
        "no SNAT source: no route (Network is unreachable) for backend 10.2.0.5"]


def test_a_loopback_source_is_refused():
    s = SnatSources(
        lookup=Routes({"127.0.0.1": Route("127.0.0.1", "lo"), "10.0.0.1": Route("10.0.0.1", "lo")}))
    with pytest.raises(OSError, match="never SNATs to a loopback address"):
        s("127.0.0.1")
    assert s("10.0.0.1") == "10.0.0.1"  # an address of this node, not loopback
    with pytest.raises(ValueError, match="loopback"):
        SnatSources("127.0.0.1")


def test_a_fixed_address_is_used_for_every_backend_without_lookups():
    routes = Routes({})
    s = SnatSources("192.0.2.1", lookup=routes)
    assert s.resolve(["10.0.0.5"]) == set() and s("10.0.0.5") == "192.0.2.1"
    assert routes.looked_up == []


def test_forgotten_backends_are_looked_up_and_logged_again(caplog):
    routes = Routes({"10.2.0.5": Route("10.2.0.1", "eth1")})
    s = SnatSources(lookup=routes)
    s.resolve(["10.2.0.5"])
    s.keep_only([])
    assert s.known() == {}
    caplog.set_level(logging.INFO, "kgw.l4.snat")
    s.resolve(["10.2.0.5"])
    assert len(caplog.records) == 1


def test_the_flag_names_one_non_loopback_ipv4_source(caplog):
    from kgw_l4.snat import fixed_source

    caplog.set_level(logging.INFO, "kgw.l4.snat")
    assert fixed_source([]) is None
    assert fixed_source(["2001:db8::1", "192.0.2.7"]) == "192.0.2.7"
    assert fixed_source(["127.0.0.1"]) is None
    assert "loopback" in caplog.records[-1].message
