"""Sockmap splice: 64 MB each way with half-close, bytes moved by the kernel."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgw_l4 import loader
from vm_tests.conftest import HOLD_SIZES, NETAPP, SYSPY, frontend
from vm_tests.topology import GW_CLIENT_ADDR, sh

MB = 1024 * 1024
OVERLAP = str(Path(__file__).resolve().parent / "overlap.py")
#: the overlap client's source address: configured nowhere (see overlap.py)
UNOWNED_CLIENT_ADDR = "10.201.1.99"


def splice_peer_entries(pin_dir: str) -> int:
    """Entries in the agent's kgw_splice_peer map (not pinned: found through the pinned
    verdict program's map ids)."""
    prog = json.loads(
        sh("bpftool", "-j", "prog", "show", "pinned", f"{pin_dir}/prog_sockmap").stdout)
    for map_id in prog["map_ids"]:
        if json.loads(sh("bpftool", "-j", "map", "show", "id", str(map_id)).stdout)["name"] \
                == "kgw_splice_peer":
            return len(json.loads(sh("bpftool", "-j", "map", "dump", "id", str(map_id)).stdout))
    raise AssertionError(f"no kgw_splice_peer among maps {prog['map_ids']}")


def assert_through_verdict(c: dict, nbytes: int) -> None:
    """Every byte went through the verdict program (redirected, or held for userspace
    to copy when the receiver lagged), none passed for want of a peer, none dropped."""
    splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
    assert c["SPLICE_REDIRECT"][1] + c["SPLICE_HOLD"][1] >= nbytes, splice
    assert c["SPLICE_PASS"][1] == 0, splice  # (bare FINs are counted here with 0 bytes)
    assert c["SPLICE_DROP"] == (0, 0), splice  # no skb met a peer missing from the sockhash
    assert c["SPLICE_EVENT_LOST"] == (0, 0), splice


@pytest.mark.parametrize("sizes", [None, HOLD_SIZES], ids=["default", "held"])
def test_splice_integrity_64mb_each_way(lab, sizes):
    """64 MB to the echo backend and back at once, then 20 short connections. "held":
    a 64-skb backlog limit, so that both directions are held and handed back to the
    kernel over and over while the other one is too."""
    addrs = lab.topo.backend_addrs
    agent = lab.agent(mode="splice", sizes=sizes)
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, addrs)])]})
    assert out["mode"] == "splice" and out["errors"] == {}
    def detail(res: dict) -> str:
        # counters first: pytest shortens long messages from the end
        c = loader.counters(agent.maps(), agent.sizes)
        splice = {k[7:]: v for k, v in c.items() if k.startswith("SPLICE")}
        retrans = {ns: lab.topo.snmp(ns)["Tcp"]["RetransSegs"]
                   for ns in (lab.topo.client, lab.topo.gw, lab.topo.backend)}
        return f"{splice} retransmitted segments {retrans} {res} log: {agent.log()[-1200:]}"

    try:
        res = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(64 * MB), timeout=120)
    except RuntimeError as e:  # the client failed: say what the agent saw
        raise AssertionError(detail({"client": str(e)[-300:]})) from e
    assert res["ok"], detail(res)
    for _ in range(20):  # many short spliced connections, each closing cleanly
        r = lab.client("transfer", GW_CLIENT_ADDR, "8080", "10000")
        assert r["ok"], detail(r)
    c = loader.counters(agent.maps(), agent.sizes)
    assert_through_verdict(c, 2 * 64 * MB)
    assert "socket error" not in agent.log(), agent.log()[-1500:]
    # the agent's end-of-splice check (client bytes in = backend bytes out, and back)
    # ran for 21 clean connections without finding a surplus
    assert "corrupted" not in agent.log(), agent.log()[-1500:]
    for ns in (lab.topo.backend, lab.topo.client):
        assert lab.topo.snmp(ns)["Tcp"]["InCsumErrors"] == 0
    # every closed splice took its map entries with it (the backend socket is already
    # closed by TCP when its FIN follows ours: its entries must not depend on its ports)
    deadline = time.monotonic() + 5
    while (left := splice_peer_entries(lab.pin_dir)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == 0, f"{left} kgw_splice_peer entries left after 21 closed splices: " \
        f"{agent.log()[-1500:]}"


def test_splice_integrity_with_two_percent_loss_both_ways(lab):
    """Every packet into the gateway, data or ACK, from either side, is lost with
    probability 2%: both senders retransmit, and the stream still arrives whole."""
    topo = lab.topo
    agent = lab.agent(mode="splice")
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, topo.backend_addrs)])]})
    assert out["mode"] == "splice", out
    # A drop lands on a data packet of each sender only by chance (GRO makes the packets
    # few; a held direction sends fewer still): another 16 MB until both have resent,
    # each transfer checked whole.
    with lab.lossy(topo.gw, "gc", "gb") as loss:
        for transfers in range(1, 4):  # noqa: B007 (counted after the loop)
            res = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(16 * MB), timeout=120)
            c = loader.counters(agent.maps(), agent.sizes)
            splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
            retrans = {ns: topo.snmp(ns)["Tcp"]["RetransSegs"]
                       for ns in (topo.client, topo.backend)}
            assert res["ok"], (res, retrans, splice)
            if all(n > 0 for n in retrans.values()):
                break
    assert loss["dropped"] > 0 and all(n > 0 for n in retrans.values()), (loss, retrans)
    assert_through_verdict(c, transfers * 2 * 16 * MB)


def test_splice_retransmission_repeating_delivered_bytes_goes_out_once(lab):
    """Segments that repeat 500 already-received bytes, once in order and once filling a
    hole in front of out-of-order data: TCP queues them whole, the verdict program trims
    the old head (SPLICE_TRIM), and the backend gets each byte once."""
    topo = lab.topo
    agent = lab.agent(mode="splice")
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, topo.backend_addrs)])]})
    assert out["mode"] == "splice", out
    mac = json.loads(topo.run(topo.client, "ip", "-j", "link", "show", "c0").stdout)[0]["address"]
    topo.run(topo.gw, "ip", "neigh", "replace", UNOWNED_CLIENT_ADDR, "lladdr", mac, "dev", "gc",
             "nud", "permanent")
    r = topo.run(topo.client, SYSPY, OVERLAP, "c0", UNOWNED_CLIENT_ADDR, GW_CLIENT_ADDR, "8080",
                 timeout=60)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    c = loader.counters(agent.maps(), agent.sizes)
    splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
    assert res["greeting"].strip() in topo.backend_addrs, res
    assert res["echo_is_prefix"] and res["echoed"] == 3000, (res, splice)
    assert c["SPLICE_TRIM"] == (2, 1000), splice
    assert c["SPLICE_TRIM_FAIL"] == (0, 0), splice
    # greeting + 3000 bytes each way, each byte once
    assert c["SPLICE_REDIRECT"][1] == len(res["greeting"]) + 2 * 3000, splice


def test_splice_backpressure_slow_backend(lab):
    """256 MB to a backend that reads nothing for 3 s. Without backpressure the gateway's
    psock queue took it all (the client had sent all 256 MB when the backend started
    reading); with it the client stops once the socket buffers along the path are full:
    at most 4 + 32 + 4 + 16 + 32 = 88 MB here (client send buffer, the gateway's client
    socket holding, a 64-skb backlog, the splice send buffer, the backend's receive
    buffer, with this machine's tcp_wmem/tcp_rmem). Then every byte arrives."""
    agent = lab.agent(mode="splice", sizes=HOLD_SIZES)
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, lab.topo.backend_addrs)],
                                              backend_port=9002)]})
    assert out["mode"] == "splice", out
    res = lab.client("sink", GW_CLIENT_ADDR, "8080", str(256 * MB), "3", timeout=120)
    c = loader.counters(agent.maps(), agent.sizes)
    splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
    assert res["ok"] and res["received"] == 256 * MB, f"{res} {splice} {agent.log()[-6000:]}"
    assert c["SPLICE_HOLD"][0] > 0, splice
    assert_through_verdict(c, 256 * MB)
    assert res["sent_unread"] < 100 * MB, (res, splice)
    assert "held direction" not in agent.log() and "half-close failed" not in agent.log(), \
        agent.log()[-1500:]


def test_splice_client_that_never_reads_is_held_back_or_reset(lab):
    """A client that keeps sending to the echo and never reads: both directions stick.
    A held skb then waits on the client socket's own psock queue, uncharged, while the
    echo it does not read is queued there (bpf/sockmap.c): depending on timing the
    client is held back (its send blocks: TCP's window closed) or, past
    KGW_SPLICE_OVERFLOW_MAX skbs there (256 here), reset by the agent. Either way the
    gateway stops taking its bytes after a bounded amount (before backpressure it took
    all it was sent)."""
    agent = lab.agent(mode="splice", sizes=dict(HOLD_SIZES, KGW_SPLICE_OVERFLOW_MAX=256))
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, lab.topo.backend_addrs)])]})
    assert out["mode"] == "splice", out
    res = lab.client("flood", GW_CLIENT_ADDR, "8080", str(1024 * MB), timeout=120)
    c = loader.counters(agent.maps(), agent.sizes)
    splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
    assert res["error"] in ("ConnectionResetError", "BrokenPipeError", "TimeoutError"), \
        (res, splice)
    assert res["sent"] < 256 * MB, (res, splice)
    if res["error"] == "TimeoutError":
        assert c["SPLICE_OVERFLOW"] == (0, 0), splice
    else:
        assert c["SPLICE_OVERFLOW"][0] > 0, splice
        assert "kept sending while it read nothing" in agent.log(), agent.log()[-1500:]
    # the gateway goes on splicing other connections
    r = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(4 * MB))
    assert r["ok"], r


def test_splice_holds_both_ways_keep_the_stream_whole(lab):
    """64 MB to the echo backend while the client leaves the echo unread for 1 s: both
    directions back up and are held, and a held skb can queue behind bytes the psock
    still has to send the other way (not bounded then: bpf/sockmap.c). The streams
    still arrive whole, in order. (A backlog limit of 256 skbs: with the tests' 64,
    1 s of not reading is enough to be reset, as above.)"""
    agent = lab.agent(mode="splice", sizes=dict(HOLD_SIZES, KGW_SPLICE_BACKLOG_MAX=256))
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, lab.topo.backend_addrs)])]})
    assert out["mode"] == "splice", out
    res = lab.client("transfer", GW_CLIENT_ADDR, "8080", str(64 * MB), "1", timeout=120)
    c = loader.counters(agent.maps(), agent.sizes)
    splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
    assert res["ok"], (res, splice)
    assert c["SPLICE_HOLD"][0] > 0, splice
    assert_through_verdict(c, 2 * 64 * MB)
    assert "held direction" not in agent.log() and "half-close failed" not in agent.log(), \
        agent.log()[-1500:]


def test_splice_backend_that_speaks_first_and_closes_never_loses_its_greeting(lab):
    """3000 connections to port 9001, whose backend sends its address and closes at once.
    The greeting and FIN often arrive while the agent inserts the two sockets into the
    sockhash one after the other; a FIN runs the verdict whatever SO_RCVLOWAT says, so
    now and then it ran on the backend socket before the client socket was in the
    sockhash: the greeting was dropped and the client timed out. The verdict holds such
    skbs for the agent to copy (bpf/sockmap.c): every client must get its greeting,
    nothing may be dropped. (Statistical: the code before the fix dropped 27 greetings in
    12000 connections here, so it passes this about 1 run in 1000.)"""
    agent = lab.agent(mode="splice")
    out = agent.start({"frontends": [frontend("fe", 8081, [("g", 1, lab.topo.backend_addrs)],
                                              backend_port=9001)]})
    assert out["mode"] == "splice", out
    n = 3000
    got = lab.client("whoami", GW_CLIENT_ADDR, "8081", str(n), timeout=600)
    c = loader.counters(agent.maps(), agent.sizes)
    splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
    served = sum(got.count(x) for x in lab.topo.backend_addrs)
    assert served == n, (sorted(set(got) - set(lab.topo.backend_addrs)), splice)
    assert c["SPLICE_DROP"] == (0, 0), splice
    assert c["SPLICE_EVENT_LOST"] == (0, 0), splice
    assert "half-close failed" not in agent.log() and "held direction" not in agent.log(), \
        agent.log()[-1500:]


@contextlib.contextmanager
def cpu_hog(cpu: int, seconds: float) -> Iterator[None]:
    """A busy loop pinned to one CPU for at most ``seconds`` (ended with the block)."""
    p = subprocess.Popen(["taskset", "-c", str(cpu), SYSPY, "-c",
                          "import time\nend = time.monotonic() + %f\n"
                          "while time.monotonic() < end: pass" % seconds])
    try:
        yield
    finally:
        p.kill()
        p.wait(5)


def test_splice_slow_reader_under_cpu_hog_gets_every_byte_in_order(lab):
    """128 MB to a sink that reads 256 KB and then sleeps 1 ms, through a 4-skb backlog
    limit, with the agent sharing its CPU with a busy loop and the client sending from
    the other CPU: the direction is held and handed back to the kernel again and again,
    while the agent can be preempted anywhere in its relay. Every byte must arrive once,
    in order (the sink checks the pattern). The relay once wrote bytes held after a
    hand-back ahead of bytes the kernel had redirected just before them (a ~3 MB shift,
    seen about 1 run in 8 under load on another day; not reproduced here on this
    machine, where tests/l4/test_splice_relay.py plays that interleaving every time)."""
    agent = lab.agent(mode="splice", sizes=dict(HOLD_SIZES, KGW_SPLICE_BACKLOG_MAX=4))
    out = agent.start({"frontends": [frontend("fe", 8080, [("g", 1, lab.topo.backend_addrs)],
                                              backend_port=9002)]})
    assert out["mode"] == "splice", out
    assert agent.proc is not None
    os.sched_setaffinity(agent.proc.pid, {0})
    with cpu_hog(0, 120):
        r = lab.topo.run(lab.topo.client, "taskset", "-c", "1", SYSPY, NETAPP, "sink",
                         GW_CLIENT_ADDR, "8080", str(128 * MB), "0", "0.001", timeout=120)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    c = loader.counters(agent.maps(), agent.sizes)
    splice = {k: v for k, v in c.items() if k.startswith("SPLICE")}
    assert res["ok"] and res["received"] == 128 * MB, f"{res} {splice} {agent.log()[-3000:]}"
    assert c["SPLICE_HOLD"][0] > 0 and c["SPLICE_REDIRECT"][0] > 0, splice
    assert_through_verdict(c, 128 * MB)
