"""Established flows survive kill -9 of the agent and its restart (adoption)."""

from __future__ import annotations

import json
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
