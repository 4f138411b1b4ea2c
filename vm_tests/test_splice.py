"""Sockmap splice: 64 MB each way with half-close, bytes moved by the kernel."""

from __future__ import annotations

from kgw_l4 import loader
from vm_tests.conftest import frontend
from vm_tests.topology import GW_CLIENT_ADDR

MB = 1024 * 1024


def test_splice_integrity_64mb_each_way(lab):
    addrs = lab.topo.backend_addrs
    agent = lab.agent(mode="splice")
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, addrs)])]})
    assert out["mode"] == "splice" and out["errors"] == {}
    def detail(res: dict) -> tuple:
        c = loader.counters(agent.maps(), agent.sizes)
        return res, {k: v for k, v in c.items() if k.startswith("SPLICE")}, agent.log()[-1500:]

    res = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(64 * MB), timeout=120)
    assert res["ok"], detail(res)
    for _ in range(20):  # many short spliced connections, each closing cleanly
        r = lab.client("transfer", GW_CLIENT_ADDR, "8080", "10000")
        assert r["ok"], detail(r)
    c = loader.counters(agent.maps(), agent.sizes)
    # every byte went through the verdict program (both ways), none through userspace
    assert c["SPLICE_REDIRECT"][1] >= 2 * 64 * MB, c["SPLICE_REDIRECT"]
    assert c["SPLICE_DROP"] == (0, 0), c  # no skb met a peer missing from the sockhash
    assert "socket error" not in agent.log(), agent.log()[-1500:]
    # the agent's end-of-splice check (client bytes in = backend bytes out, and back)
    # ran for 21 clean connections without finding a surplus
    assert "corrupted" not in agent.log(), agent.log()[-1500:]
    for ns in (lab.topo.backend, lab.topo.client):
        assert lab.topo.snmp(ns)["Tcp"]["InCsumErrors"] == 0
