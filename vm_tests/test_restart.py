"""Established flows survive kill -9 of the agent and its restart (adoption)."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import time

from kgw_l4 import abi, loader
from vm_tests.conftest import frontend
from vm_tests.topology import GW_CLIENT_ADDR


import pytest


@pytest.fixture(params=["tc", "xdp"])
def mode_lab(request):
    name = "lab" if request.param == "tc" else "xdp_lab"
    return request.param, request.getfixturevalue(name)


def test_flows_survive_kill9_and_restart(mode_lab):
    mode, lab = mode_lab
    addrs = lab.topo.backend_addrs
    cfg = {"frontends": [frontend("fe", 8080, [("g", 1, addrs)]),
                         frontend("who", 8081, [("g", 1, addrs)], backend_port=9001)]}
    first = lab.agent(mode=mode)
    first.start(cfg)
    holder = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "6", "6")
    json.loads(holder.stdout.readline())
    m = first.maps()
    fe_before = {f.fe_id for f in loader.flows(m)}
    first.kill9()
    time.sleep(0.5)
    # no agent: the kernel keeps forwarding, established and new flows alike
    assert lab.client("transfer", GW_CLIENT_ADDR, "8080", "100000")["ok"]
    second = lab.agent(mode=mode)
    out = second.start(cfg)
    assert out["errors"] == {}
    assert out.get("slots_written") == 0, out  # adopted: nothing to rewrite
    res = json.loads(holder.stdout.readline())
    holder.wait(10)
    assert res["failures"] == 0 and res["rounds"] > 20, res
    assert {f.fe_id for f in loader.flows(m)} >= fe_before
    assert lab.client("transfer", GW_CLIENT_ADDR, "8080", "1000000")["ok"]
    assert loader.counter(m, abi.Counter.DROP_NOT_SYN, second.sizes)[0] == 0


def test_counters_map_of_another_build_is_replaced_and_flows_survive(lab):
    """A new build with more counters (a bigger kgw_stats) replaces that map alone: the
    connection table and the configuration maps are adopted, so flows carry on."""
    addrs = lab.topo.backend_addrs
    cfg = {"frontends": [frontend("fe", 8080, [("g", 1, addrs)])]}
    first = lab.agent(mode="tc")
    first.start(cfg)
    holder = lab.client_bg("hold", GW_CLIENT_ADDR, "8080", "6", "6")
    json.loads(holder.stdout.readline())
    flows_before = {(f.fe_id, f.backend_id) for f in loader.flows(first.maps())}
    assert flows_before
    first.kill9()
    # what an older build with fewer counters would have left pinned
    stats = f"{lab.pin_dir}/kgw_stats"
    os.unlink(stats)
    subprocess.run(["bpftool", "map", "create", stats, "type", "percpu_array", "key", "4",
                    "value", str(ctypes.sizeof(abi.CounterVal)), "entries", "3",
                    "name", "kgw_stats"], check=True)
    second = lab.agent(mode="tc")
    out = second.start(cfg)
    assert out["errors"] == {}, out
    log = second.log()
    assert "pinned kgw_stats" in log and "replacing" in log, log[-1500:]
    want = loader.expected_maps(second.sizes)["kgw_stats"]
    got = loader.FdMap.open_pinned(stats)
    assert got.info == want
    got.close()
    m = second.maps()
    assert {(f.fe_id, f.backend_id) for f in loader.flows(m)} >= flows_before
    res = json.loads(holder.stdout.readline())
    holder.wait(10)
    assert res["failures"] == 0 and res["rounds"] > 20, res
    assert lab.client("transfer", GW_CLIENT_ADDR, "8080", "100000")["ok"]
    assert loader.counter(m, abi.Counter.NEW_FLOWS, second.sizes)[0] >= 1
