"""Hostile packets each meet a defined rule, are counted under their reason, and leave
the tables and established flows intact.

  non-SYN first packet of an unknown flow   dropped          DROP_NOT_SYN
  IPv4 fragment                              passed, untouched PASS_FRAGMENT
  truncated TCP header / IHL past the end    dropped          DROP_MALFORMED
  IP options                                 load-balanced    IP_OPTIONS (+ NEW_FLOWS)
  SYN flood beyond the table size            embryonic LRU    NEW_FLOWS; established
                                             absorbs it       table untouched
"""

from __future__ import annotations

import json

import pytest

from kgw_l4 import abi, loader
from vm_tests.conftest import PY, TEST_SIZES, frontend
from vm_tests.topology import GW_CLIENT_ADDR

pytest.importorskip("scapy", reason="hostile-packet tests craft packets with scapy")

HOSTILE = str(__import__("pathlib").Path(__file__).resolve().parent / "hostile.py")
SIZES = dict(TEST_SIZES, KGW_CT_SYN_SIZE=512)

CASES = {
    # kind: (count, counter that must grow by exactly `per * count`, per, new ct entries allowed)
    "not_syn": (50, abi.Counter.DROP_NOT_SYN, 1),
    "fragment": (10, abi.Counter.PASS_FRAGMENT, 4),
    "truncated": (20, abi.Counter.DROP_MALFORMED, 2),
    "ip_options": (10, abi.Counter.IP_OPTIONS, 1),
    "syn_flood": (3000, abi.Counter.NEW_FLOWS, 1),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_hostile_packets(lab, kind):
    n, counter, per = CASES[kind]
    addrs = lab.topo.backend_addrs
    agent = lab.agent(sizes=SIZES)
    agent.start({"frontends": [frontend("fe", 8080, [("g", 1, addrs)])]})
    holder = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "4", "4")
    json.loads(holder.stdout.readline())
    m = agent.maps()
    held = {(f.saddr, f.sport, f.daddr, f.dport) for f in loader.flows(m, ("kgw_ct",))}
    assert len(held) == 8
    before = loader.counters(m, SIZES)

    mac = json.loads(lab.topo.run(lab.topo.gw, "ip", "-j", "link", "show", "gc").stdout)[0][
        "address"]
    r = lab.topo.run(lab.topo.client, PY, HOSTILE, kind, mac, GW_CLIENT_ADDR, "8080", str(n),
                     timeout=120)
    sent = int(r.stdout.strip())
    assert sent == n * per

    after = loader.counters(m, SIZES)
    grew = after[counter.name][0] - before[counter.name][0]
    if kind == "not_syn":  # a drop with a frontend is counted on it too (/metrics)
        fe = loader.stats(m, [0], [], SIZES).frontends[0]
        assert fe.drops["DROP_NOT_SYN"][0] == n, fe.drops
    if kind == "ip_options":
        assert grew >= n  # the SYN-ACKs come back without options; replies may add more
        assert after["NEW_FLOWS"][0] - before["NEW_FLOWS"][0] == n
    else:
        assert grew == n * per, (kind, before[counter.name], after[counter.name])
    if kind in ("not_syn", "fragment", "truncated"):
        assert after["NEW_FLOWS"][0] == before["NEW_FLOWS"][0]
    if kind == "syn_flood":
        fill, cap = loader.fill_levels(m)["kgw_ct_syn"]
        assert fill <= cap == SIZES["KGW_CT_SYN_SIZE"]

    # established flows and their entries are intact, and new flows still work
    now = {(f.saddr, f.sport, f.daddr, f.dport) for f in loader.flows(m, ("kgw_ct",))}
    assert held <= now
    res = json.loads(holder.stdout.readline())
    holder.wait(10)
    assert res["failures"] == 0, res
    assert lab.client("transfer", GW_CLIENT_ADDR, "8080", "200000")["ok"]
    assert lab.topo.snmp(lab.topo.backend)["Tcp"]["InCsumErrors"] == 0
