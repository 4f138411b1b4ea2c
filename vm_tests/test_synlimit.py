"""The per-source SYN rate limit (bpf/synlimit.h) in the kernel program: one source's
burst over the limit is dropped before the listening socket sees it, another source
connects normally, at TC and at XDP (where the TC program behind it must not charge a
SYN a second time)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kgw_l4 import abi, loader
from vm_tests.conftest import SYSPY, frontend
from vm_tests.topology import CLIENT_ADDR, GW_CLIENT_ADDR

SYNBURST = str(Path(__file__).resolve().parent / "synburst.py")
SECOND_CLIENT = "10.201.1.3"
PORT = 7070  # a userspace listener in the gw namespace (as an L7 listener's)
RATE, BURST = 2, 5

LISTENER = ("import socket, sys\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('0.0.0.0', {PORT})); s.listen(1024); print('ready', flush=True)\n"
            "while True:\n"
            "    c, _ = s.accept(); c.close()\n")


def _burst(lab, src: str, n: int, wait: float) -> dict:
    r = lab.topo.run(lab.topo.client, SYSPY, SYNBURST, src, GW_CLIENT_ADDR, str(PORT), str(n),
                     str(wait), timeout=wait + 20)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _run(lab, mode: str) -> None:
    lab.topo.run(lab.topo.client, "ip", "addr", "add", f"{SECOND_CLIENT}/24", "dev", "c0")
    p = lab.topo.popen(lab.topo.gw, SYSPY, "-c", LISTENER, stdout=subprocess.PIPE, text=True)
    lab.procs.append(p)
    assert p.stdout and p.stdout.readline().strip() == "ready"
    agent = lab.agent(mode=mode)
    config = {"frontends": [frontend("ns/gw/tcp", 8080, [("g", 1, lab.topo.backend_addrs)])],
              "connection_limits": [{"name": "ns/gw/http", "address": "0.0.0.0", "port": PORT,
                                     "per_second": RATE, "burst": BURST}]}
    status = agent.start(config)
    assert not status.get("errors"), status
    maps = agent.maps()
    def drops() -> int:
        return loader.counter(maps, abi.Counter.DROP_SYN_RATE, agent.sizes)[0]

    before = drops()

    # The flooding source: its burst, and about RATE more per second, get through.
    flood = _burst(lab, CLIENT_ADDR, 60, 1.0)
    assert BURST <= flood["connected"] <= BURST + 2 * RATE + 1, flood
    dropped = drops() - before
    assert dropped >= 60 - flood["connected"], dropped

    # Another source is not affected: its whole burst connects at once (at XDP: the TC
    # program behind it did not charge these SYNs again).
    other = _burst(lab, SECOND_CLIENT, BURST, 1.0)
    assert other == {"connected": BURST, "pending": 0}, other

    # The limit removed: the flooding source connects freely again.
    config["connection_limits"] = []
    assert not agent.apply(config).get("errors")
    assert _burst(lab, CLIENT_ADDR, 30, 2.0)["connected"] == 30


def test_syn_rate_limit_tc(lab):
    _run(lab, "tc")


def test_syn_rate_limit_xdp(xdp_lab):
    _run(xdp_lab, "xdp")
