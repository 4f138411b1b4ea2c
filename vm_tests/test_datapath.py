"""Data integrity, checksums, weights, Maglev stability through the kernel plane."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from kgw_l4 import abi, loader
from vm_tests.conftest import frontend, share_ok
from vm_tests.topology import GW_CLIENT_ADDR

MB = 1024 * 1024


def _integrity(lab, agent) -> None:
    addrs = lab.topo.backend_addrs
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, addrs)])]})
    assert out["errors"] == {}
    res = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(32 * MB))
    assert res["ok"], res
    assert res["backend"] in addrs
    # many short transfers spread over the backends, each checked end to end
    for _ in range(10):
        r = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(256 * 1024))
        assert r["ok"], r
    for ns in (lab.topo.backend, lab.topo.client):
        tcp = lab.topo.snmp(ns)["Tcp"]
        assert tcp["InCsumErrors"] == 0, (ns, tcp)
    c = loader.counters(agent.maps(), agent.sizes)
    assert c["NEW_FLOWS"][0] == 11
    assert c["DROP_REWRITE"][0] == 0 and c["DROP_FIB"][0] == 0
    _per_frontend_and_backend_counters(agent, flows=11, sent=32 * MB + 10 * 256 * 1024)


def _per_frontend_and_backend_counters(agent, flows: int, sent: int) -> None:
    """The frontend's and backends' slots (what /metrics reports) agree with the global
    counters and with each other: every flow counted once on its frontend and once on its
    backend, every packet of a flow on both, each way."""
    m = agent.maps()
    views = {f[3] for f in loader.frontends(m)}
    bids = set(loader.backends(m, agent.sizes))
    st = loader.stats(m, views, bids, agent.sizes)
    fe, = st.frontends.values()
    assert fe.flows == flows == sum(b.flows for b in st.backends.values())
    for way in ("to_backend", "to_client"):
        assert getattr(fe, way) == tuple(
            map(sum, zip(*(getattr(b, way) for b in st.backends.values())))), way
    # the client's payload went to the backends (plus headers), replies came back
    assert fe.to_backend[1] > sent and fe.to_client[0] > 0
    # every packet of a known flow is counted on its frontend: the first of each flow
    # (NEW_FLOWS) and every connection-table hit
    assert fe.to_backend[0] + fe.to_client[0] == (st.counters["CT_HIT"][0]
                                                  + st.counters["NEW_FLOWS"][0])
    assert all(v == (0, 0) for v in fe.drops.values()), fe.drops


def test_integrity_tc(lab):
    agent = lab.agent(mode="tc")
    _integrity(lab, agent)
    _inspect_reads_the_real_maps(lab, agent)


def test_integrity_tc_with_two_percent_loss_both_ways(lab):
    """Packets leaving the gateway towards either end are lost with probability 2%,
    data and ACKs alike: both ends retransmit through the NAT, and the stream still
    arrives whole with correct checksums."""
    topo = lab.topo
    agent = lab.agent(mode="tc")
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, topo.backend_addrs)])]})
    assert out["errors"] == {}
    with lab.lossy(topo.client, "c0") as to_client, lab.lossy(topo.backend, "b0") as to_backend:
        res = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(16 * MB))
    retrans = {ns: topo.snmp(ns)["Tcp"] for ns in (topo.client, topo.backend)}
    assert res["ok"], (res, to_client, to_backend)
    assert to_client["dropped"] > 0 and to_backend["dropped"] > 0, (to_client, to_backend)
    for ns, tcp in retrans.items():
        assert tcp["RetransSegs"] > 0 and tcp["InCsumErrors"] == 0, (ns, tcp)
    c = loader.counters(agent.maps(), agent.sizes)
    assert c["NEW_FLOWS"][0] == 1, c["NEW_FLOWS"]
    assert c["DROP_REWRITE"][0] == 0 and c["DROP_FIB"][0] == 0


def _inspect_reads_the_real_maps(lab, agent) -> None:
    """kgw-inspect on the pinned maps: frontends, flows, and `flow` agrees with the
    backend an established flow actually got."""
    import io
    import json

    from kgw_l4.inspect import Env, main

    def run(*argv):
        out = io.StringIO()
        env = Env(stdout=out, stderr=io.StringIO(), sizes=agent.sizes,
                  admin_get=lambda _u: {"l4": {"frontends": [
                      {"name": "fe", "address": GW_CLIENT_ADDR, "port": 8080, "protocol": "TCP"}]}})
        assert main(["--pin-dir", agent.pin_dir, "-o", "json", *argv], env) == 0
        return json.loads(out.getvalue())

    fes = run("frontends")
    assert fes[0]["name"] == "fe" and len(fes[0]["backends"]) == 3
    assert abs(sum(b["maglev_share"] for b in fes[0]["backends"]) - 1) < 0.01
    holder = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "3", "2")
    first = json.loads(holder.stdout.readline())
    flows = [f for f in run("flows", "--no-reply") if f["state"] != "closing"]
    assert len(flows) == 3
    for f in flows:
        src, dst = f["from"], f["to"]
        got = run("flow", src, dst)[0]
        assert got["backend"].split(":")[0] in first["backends"]
        # a new flow from the same tuple would get the same backend (Maglev, Python mirror)
        assert "existing" in got["source"]
    counters = {c["counter"] for c in run("counters")}
    assert "NEW_FLOWS" in counters
    holder.wait(10)


def test_integrity_xdp(xdp_lab):
    agent = xdp_lab.agent(mode="xdp")
    _integrity(xdp_lab, agent)
    out = xdp_lab.topo.run(xdp_lab.topo.gw, "ip", "link", "show", "gc").stdout
    assert "prog/xdp" in out and "kgw_xdp" in out
    c = loader.counters(agent.maps(), agent.sizes)
    # XDP forwards the bulk; TC only sees what XDP hands up (first packets to a neighbour)
    assert c["FWD_XDP"][0] > 0.95 * (c["FWD_XDP"][0] + c["FWD_TC"][0]), c


def test_weighted_distribution(lab):
    a, b, _ = lab.topo.backend_addrs
    agent = lab.agent()
    agent.start({"frontends": [frontend("fe", 8081, [("a", 1, [a]), ("b", 3, [b])],
                                        backend_port=9001)]})
    n = 800
    got = Counter(lab.client("whoami", GW_CLIENT_ADDR, "8081", str(n)))
    assert got[a] + got[b] == n, got
    assert share_ok(got[a], n, 0.25), got
    assert share_ok(got[b], n, 0.75), got


def test_maglev_stability_and_python_mirror(lab):
    addrs = lab.topo.backend_addrs
    agent = lab.agent()
    agent.start({"frontends": [frontend("fe", 8081, [("g", 1, addrs)], backend_port=9001)]})
    n, sport0 = 400, 21000
    before = lab.client("whoami", GW_CLIENT_ADDR, "8081", str(n), str(sport0))
    assert all(not x.startswith("error") for x in before), before
    # The Python mirror of the BPF flow hash predicts every flow's backend.
    from kgw_l4 import maglev

    size = agent.sizes["KGW_MAGLEV_SIZE"]
    eps = sorted(addrs)
    table = maglev.build_table([maglev.WeightedEndpoint(f"{x}:9001", 1) for x in eps], size)
    predicted = [eps[table[maglev.flow_slot("10.201.1.2", sport0 + i, GW_CLIENT_ADDR, 8081, 6,
                                            size)]]
                 for i in range(n)]
    assert predicted == before

    removed = addrs[0]
    agent.apply({"frontends": [frontend("fe", 8081, [("g", 1, addrs[1:])], backend_port=9001)]})
    after = lab.client("whoami", GW_CLIENT_ADDR, "8081", str(n), str(sport0))
    others = [(x, y) for x, y in zip(before, after) if x != removed]
    moved = sum(1 for x, y in others if x != y)
    assert removed not in after
    assert moved / len(others) <= 1 / len(addrs) + 0.01, (moved, len(others))


def test_drained_backend_keeps_its_flows(lab):
    a, b, _ = lab.topo.backend_addrs
    agent = lab.agent()
    cfg = lambda wa: {"frontends": [  # noqa: E731
        frontend("fe", 8080, [("a", wa, [a]), ("b", 1, [b])]),
        frontend("who", 8081, [("a", wa, [a]), ("b", 1, [b])], backend_port=9001)]}
    agent.start(cfg(1))
    holder = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "12", "4")
    import json

    first = json.loads(holder.stdout.readline())
    assert a in first["backends"] and b in first["backends"]
    out = agent.apply(cfg(0))
    assert out["errors"] == {}
    new = lab.client("whoami", GW_CLIENT_ADDR, "8081", "100")
    assert a not in new and set(new) == {b}
    res = json.loads(holder.stdout.readline())
    holder.wait(10)
    assert res["failures"] == 0 and res["rounds"] > 10, res


def test_bad_input_is_reported_not_fatal(lab):
    a = lab.topo.backend_addrs[0]
    agent = lab.agent()
    out = agent.start({"frontends": [
        frontend("good", 8080, [("g", 1, [a])]),
        frontend("clash", 8080, [("g", 1, [a])]),
        frontend("empty", 8082, []),
        {"name": "badaddr", "address": "not-an-ip", "port": 1, "backends": []},
    ]})
    assert "port clash" in out["errors"]["clash"]
    assert out["errors"]["empty"] == "no backends"
    assert "not an IPv4" in out["errors"]["badaddr"]
    assert lab.client("transfer", GW_CLIENT_ADDR, "8080", "1000")["ok"]
    # a frontend without backends is not installed: the node refuses, fast
    r = lab.client("whoami", GW_CLIENT_ADDR, "8082", "1")
    assert r == ["error:ConnectionRefusedError"]
    out = agent.apply({"frontends": "nope"})  # garbage config: reported, agent lives
    assert out["errors"]
    assert agent.proc.poll() is None


def test_unknown_interface_is_a_clear_error(lab):
    agent = lab.agent(interfaces="gc,nosuchdev")
    with pytest.raises(RuntimeError, match="unknown interface 'nosuchdev'"):
        agent.start({"frontends": []})


def test_connection_table_expires_entries(lab):
    """Closed flows leave after the closing timeout, live ones stay; then all go."""
    import json

    from vm_tests.conftest import wait_for

    a = lab.topo.backend_addrs[0]
    s = 10**9
    agent = lab.agent(settings={"ct_timeout_syn_ns": 1 * s, "ct_timeout_est_ns": 30 * s,
                                "ct_timeout_closing_ns": 1 * s}, extra=["--gc-interval", "0.3"])
    agent.start({"frontends": [frontend("fe", 8080, [("g", 1, [a])])]})
    live = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "1", "5")
    json.loads(live.stdout.readline())
    short = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "1", "0.2")
    short.wait(10)
    m = agent.maps()
    assert loader.counter(m, abi.Counter.NEW_FLOWS, agent.sizes)[0] == 2
    assert len(loader.flows(m)) == 4  # two flows, two directions each
    closing = [f for f in loader.flows(m) if f.flags & (abi.CT_F_FIN | abi.CT_F_RST)]
    assert closing
    assert wait_for(lambda: len(loader.flows(m)) == 2, timeout=6), loader.flows(m)
    assert all(not f.flags & (abi.CT_F_FIN | abi.CT_F_RST) for f in loader.flows(m))
    res = json.loads(live.stdout.readline())
    assert res["failures"] == 0
    assert wait_for(lambda: not loader.flows(m), timeout=6), loader.flows(m)
    lvl = loader.fill_levels(m)
    assert lvl["kgw_ct"][0] == 0 and lvl["kgw_ct_syn"][0] == 0


def test_udp_flows_are_balanced_and_sticky(lab):
    addrs = lab.topo.backend_addrs
    agent = lab.agent()
    fe = frontend("dns", 5353, [("g", 1, addrs)], backend_port=9053)
    fe["protocol"] = "UDP"
    assert agent.start({"frontends": [fe]})["errors"] == {}
    res = lab.client("uping", GW_CLIENT_ADDR, "5353", "60", "5")
    assert res["lost"] == 0 and res["moved"] == 0, res
    assert set(res["backends"]) == set(addrs)  # 60 flows reach all three backends
    flows = loader.flows(agent.maps(), ("kgw_ct",))
    assert all(f.proto == "UDP" for f in flows) and len(flows) == 120
    assert lab.topo.snmp(lab.topo.client)["Udp"]["InCsumErrors"] == 0


def test_integrity_tc_full_checksums(xdp_lab):
    """TC on packets with complete checksums (senders' tx offload off): the L4 checksum
    differences are applied to the field itself, not to a partial sum."""
    agent = xdp_lab.agent(mode="tc")
    _integrity(xdp_lab, agent)


def _tx_packets(lab, ns: str, dev: str) -> int:
    import json

    out = lab.topo.run(ns, "ip", "-s", "-j", "link", "show", dev).stdout
    return json.loads(out)[0]["stats64"]["tx"]["packets"]


def test_fib_cache_follows_neighbour_and_route_changes(lab):
    """The TC program caches FIB results per CPU for KGW_FIB_CACHE_NS (100 ms): an
    established flow must follow a changed neighbour address and a changed route. A
    cache that never expired would keep sending to the old MAC (the flow stalls) and
    out of the old interface (no packets on the new one)."""
    import json

    a = lab.topo.backend_addrs[0]
    topo = lab.topo
    agent = lab.agent(mode="tc")
    agent.start({"frontends": [frontend("fe", 8080, [("g", 1, [a])])]})
    holder = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "1", "4")
    assert json.loads(holder.stdout.readline())["backends"] == [a]
    time.sleep(0.3)

    # Neighbour change: the backend's interface gets a new MAC and the gateway learns it.
    new_mac = "02:6b:67:77:00:01"
    topo.run(topo.gw, "ip", "neigh", "replace", a, "lladdr", new_mac, "dev", "gb", "nud",
             "reachable")
    topo.run(topo.backend, "ip", "link", "set", "b0", "address", new_mac)
    time.sleep(0.8)

    # Route change: a second link gw(gb2) — backend(b1), and a host route to `a` over it.
    topo.run(topo.gw, "ip", "link", "add", "gb2", "type", "veth", "peer", "name", "b1",
             "netns", topo.backend)
    topo.run(topo.gw, "ip", "addr", "add", "10.201.3.1/24", "dev", "gb2")
    topo.run(topo.backend, "ip", "addr", "add", "10.201.3.2/24", "dev", "b1")
    topo.run(topo.backend, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
             "net.ipv4.conf.b1.rp_filter=0")
    topo.run(topo.gw, "ip", "link", "set", "gb2", "up")
    topo.run(topo.backend, "ip", "link", "set", "b1", "up")
    before = _tx_packets(lab, topo.gw, "gb2")
    topo.run(topo.gw, "ip", "route", "add", f"{a}/32", "via", "10.201.3.2", "dev", "gb2")
    time.sleep(1.0)
    moved = _tx_packets(lab, topo.gw, "gb2") - before
    res = json.loads(holder.stdout.readline())
    holder.wait(10)
    assert res["failures"] == 0 and res["rounds"] > 40, res
    assert moved >= 10, moved  # ~20 pings in that second, all over the new route
    c = loader.counters(agent.maps(), agent.sizes)
    assert c["DROP_FIB"][0] == 0 and c["DROP_REWRITE"][0] == 0


def test_reused_tuple_is_rearmed_in_place(lab):
    """A client that reuses its source port while the old flow's entries are closing gets
    a working connection whose entries are re-armed in kgw_ct (bpf/nat.h, kgw_ct_rearm):
    never also in kgw_ct_syn, one row per direction in kgw-inspect, counted as a new flow
    and promoted in place. A bare SYN leaves them embryonic, and they expire on the SYN
    timeout, not the established one."""
    import io
    import json

    from kgw_l4.inspect import Env, main
    from vm_tests.conftest import PY, wait_for

    a = lab.topo.backend_addrs[0]
    s = 10**9
    agent = lab.agent(settings={"ct_timeout_syn_ns": 2 * s, "ct_timeout_est_ns": 3600 * s,
                                "ct_timeout_closing_ns": 30 * s}, extra=["--gc-interval", "0.3"])
    agent.start({"frontends": [frontend("who", 8081, [("g", 1, [a])], backend_port=9001)]})
    m = agent.maps()
    sport = 22345

    def mine():
        return [f for f in loader.flows(m) if (f.saddr, f.sport) == ("10.201.1.2", sport)
                or (f.new_daddr, f.new_dport) == ("10.201.1.2", sport)]

    assert lab.client("whoami", GW_CLIENT_ADDR, "8081", "1", str(sport)) == [a]
    assert wait_for(lambda: len(mine()) == 2
                    and all(f.flags & abi.CT_F_FIN for f in mine())), mine()
    first = {f.reply: f for f in mine()}
    before = loader.counters(m, agent.sizes)

    assert lab.client("whoami", GW_CLIENT_ADDR, "8081", "1", str(sport)) == [a]
    after = loader.counters(m, agent.sizes)
    grew = {k: after[k][0] - before[k][0] for k in after}
    assert grew["NEW_FLOWS"] == 1 and grew["CT_PROMOTED"] == 1 and grew["CT_EXPIRED"] == 1, grew
    assert all(v == 0 for k, v in grew.items() if k.startswith("DROP_")), grew
    again = mine()
    assert sorted(f.table for f in again) == ["ct", "ct"], again
    for f in again:  # the same rewrite, new bookkeeping, no longer embryonic
        old = first[f.reply]
        assert (f.new_saddr, f.new_sport, f.new_daddr, f.new_dport) == \
            (old.new_saddr, old.new_sport, old.new_daddr, old.new_dport)
        assert f.created_ns > old.created_ns and not f.flags & abi.CT_F_EMBRYONIC

    out = io.StringIO()
    env = Env(stdout=out, stderr=io.StringIO(), sizes=agent.sizes, admin_get=lambda _u: None)
    assert main(["--pin-dir", agent.pin_dir, "-o", "json", "flows"], env) == 0
    rows = [r for r in json.loads(out.getvalue())
            if f"10.201.1.2:{sport}" in r["from"] + r["rewrite"]]
    assert sorted((r["dir"], r["table"]) for r in rows) == [("orig", "ct"), ("reply", "ct")], rows

    # A bare SYN on the tuple, then the client's reset. Scapy sends both: the client's
    # kernel must not answer the SYN-ACK itself, because what it answers depends on a race
    # (a TIME_WAIT socket left by the last connection answers with an ACK, which completes
    # the handshake; without one it resets). A blackhole route to the gateway silences it.
    mac = json.loads(lab.topo.run(lab.topo.gw, "ip", "-j", "link", "show", "gc").stdout)[0][
        "address"]
    assert wait_for(lambda: all(f.flags & abi.CT_F_FIN for f in mine()), timeout=5)
    lab.topo.run(lab.topo.client, "ip", "route", "add", "blackhole", f"{GW_CLIENT_ADDR}/32")
    try:
        lab.topo.run(lab.topo.client, PY, "-c",
                     "import time; from scapy.all import Ether, IP, TCP, sendp; "
                     f"p = Ether(dst='{mac}')/IP(src='10.201.1.2', dst='{GW_CLIENT_ADDR}'); "
                     f"sendp(p/TCP(sport={sport}, dport=8081, flags='S', seq=12345), "
                     "iface='c0', verbose=False); time.sleep(0.2); "
                     f"sendp(p/TCP(sport={sport}, dport=8081, flags='R', seq=12346), "
                     "iface='c0', verbose=False)")
        armed = mine()
        assert sorted(f.table for f in armed) == ["ct", "ct"], armed
        assert all(f.flags & abi.CT_F_EMBRYO for f in armed), armed
        # The reply entry expires on the SYN timeout; the forward one saw the client's
        # reset and has the closing timeout, as an embryonic entry in kgw_ct_syn would.
        assert wait_for(lambda: [f.reply for f in mine()] == [False], timeout=8), mine()
        assert mine()[0].flags & abi.CT_F_RST
    finally:
        lab.topo.run(lab.topo.client, "ip", "route", "del", "blackhole", f"{GW_CLIENT_ADDR}/32")
    assert lab.client("whoami", GW_CLIENT_ADDR, "8081", "1", str(sport)) == [a]
    assert wait_for(lambda: len(mine()) == 2), mine()
    assert not any(f.flags & abi.CT_F_EMBRYONIC for f in mine()), mine()
