"""Health verdicts in the kernel plane: two backends behind a TCP frontend programmed
into BPF (the L4 agent in tc mode, as `kgw run` runs it), their group carrying an active
TCP health check. Kill one backend's server: within interval x threshold (plus the first
probe's spread and the write) its Maglev slots are gone and every new connection goes to
the other; the row changed in exactly the dead backend's slots; restart it and the row is
what it was before, connections reach it again.

The same in splice mode (the sockmap acceptor: the Maglev table is the acceptor's own,
kgw_l4.userspace.picker): connections from fixed source ports show the table's choices
-- before the kill each goes where the full table says, after it every one goes to the
live backend and the agent says it moved exactly the dead backend's slots, after the
restart each goes where it went before."""

from __future__ import annotations

import subprocess
import time

import pytest

from kgw_l4 import configio, loader
from kgw_l4.userspace import picker
from vm_tests.conftest import NETAPP, SYSPY, Lab, frontend, wait_for
from vm_tests.topology import CLIENT_ADDR, GW_CLIENT_ADDR, Topology

#: interval 0.2 s, 2 failures: the verdict is in 0.4 s after the first failed probe,
#: which is at most one interval after the kill
CHECK = {"type": "TCP", "interval": 0.2, "timeout": 0.2, "unhealthy_threshold": 2}
#: what the test allows from the kill to the rewritten row (0.6 s of checks plus the
#: agent's thread hop and a loaded machine)
BOUND = 1.5


@pytest.fixture
def lab2(tmp_path):
    topo = Topology(backends=2)
    topo.__enter__()
    lab = Lab(topo, tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def _serve(lab: Lab, addr: str) -> subprocess.Popen:
    p = lab.topo.popen(lab.topo.backend, SYSPY, NETAPP, "serve", addr, stdout=subprocess.PIPE,
                       text=True)
    lab.procs.append(p)
    assert p.stdout and p.stdout.readline().strip() == "ready"
    return p


def test_dead_backend_loses_only_its_slots_and_gets_them_back(lab2):
    lab = lab2
    a, b = lab.topo.backend_addrs
    servers = {addr: _serve(lab, addr) for addr in (a, b)}
    fe = frontend("fe", 8081, [("ns/db:9001", 1, [a, b])], backend_port=9001)
    fe["backends"][0]["health_check"] = CHECK
    agent = lab.agent(mode="tc")
    out = agent.start({"frontends": [fe]})
    assert out["errors"] == {}, (out, agent.log()[-2000:])
    maps = agent.maps()
    [(_, _, _, fe_id)] = loader.frontends(maps)
    ids = {addr: bid for bid, (addr, _, _) in loader.backends(maps, agent.sizes).items()}
    before = loader.maglev_row(maps, fe_id, agent.sizes)
    assert set(before) == {ids[a], ids[b]}
    got = lab.client("whoami", GW_CLIENT_ADDR, "8081", "40")
    assert set(got) == {a, b}, got

    servers[b].kill()
    servers[b].wait(5)
    killed = time.monotonic()
    assert wait_for(lambda: ids[b] not in loader.maglev_row(maps, fe_id, agent.sizes),
                    timeout=5, interval=0.02), agent.log()[-2000:]
    took = time.monotonic() - killed
    assert took < BOUND, took
    during = loader.maglev_row(maps, fe_id, agent.sizes)
    moved = [i for i, (x, y) in enumerate(zip(before, during)) if x != y]
    # only the dead backend's slots moved, all of them, to the live one
    assert moved == [i for i, x in enumerate(before) if x == ids[b]]
    assert set(during) == {ids[a]}
    got = lab.client("whoami", GW_CLIENT_ADDR, "8081", "60")
    assert set(got) == {a}, got

    servers[b] = _serve(lab, b)
    assert wait_for(lambda: loader.maglev_row(maps, fe_id, agent.sizes) == before,
                    timeout=5, interval=0.05), agent.log()[-2000:]
    got = lab.client("whoami", GW_CLIENT_ADDR, "8081", "40")
    assert set(got) == {a, b}, got
    log = agent.log()
    assert "fails its TCP health check" in log and "passes its TCP health check" in log


def test_splice_mode_a_dead_backend_loses_its_slots_and_gets_them_back(lab2):
    lab = lab2
    a, b = lab.topo.backend_addrs
    servers = {addr: _serve(lab, addr) for addr in (a, b)}
    # port 9000: greets with its address, then echoes until the client closes (the
    # backend does not close first: a spliced pair is made of two open sockets)
    fe = frontend("fe", 8081, [("ns/db:9000", 1, [a, b])], backend_port=9000)
    fe["backends"][0]["health_check"] = CHECK
    agent = lab.agent(mode="splice")
    out = agent.start({"frontends": [fe]})
    assert out["mode"] == "splice" and out["errors"] == {}, (out, agent.log()[-2000:])
    # the acceptor's table (its own code), full and with b down
    [cfg_fe] = configio.from_dict({"frontends": [fe]}).frontends
    full = picker(cfg_fe)
    without_b = picker(cfg_fe, {("ns/db:9000", b, 9000)})
    dead_slots = sum(1 for i in full.table if full.endpoints[i][0] == b)
    assert dead_slots and set(without_b.table) == {full.endpoints.index((a, 9000))}

    def expected(table, sport0: int, n: int) -> list[str]:
        return [table.choose((CLIENT_ADDR, sport0 + i), (GW_CLIENT_ADDR, 8081))[0]
                for i in range(n)]

    got = lab.client("whoami", GW_CLIENT_ADDR, "8081", "40", "41000")
    assert got == expected(full, 41000, 40), got
    assert set(got) == {a, b}, got

    servers[b].kill()
    servers[b].wait(5)
    killed = time.monotonic()
    moved = f"health verdicts moved {dead_slots} of {len(full.table)} Maglev slots"
    assert wait_for(lambda: moved in agent.log(), timeout=5, interval=0.02), agent.log()[-2000:]
    took = time.monotonic() - killed
    assert took < BOUND, took
    got = lab.client("whoami", GW_CLIENT_ADDR, "8081", "60", "42000")
    assert set(got) == {a}, got

    servers[b] = _serve(lab, b)
    assert wait_for(lambda: "passes its TCP health check" in agent.log(), timeout=5,
                    interval=0.05), agent.log()[-2000:]
    time.sleep(0.3)  # (the table is rebuilt in a thread)
    got = lab.client("whoami", GW_CLIENT_ADDR, "8081", "40", "43000")
    assert got == expected(full, 43000, 40), got
    assert "fails its TCP health check" in agent.log()
