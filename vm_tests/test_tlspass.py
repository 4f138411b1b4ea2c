"""TLS passthrough through the kernel plane: SNI picks the route, sockmap splices."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kgw_l4 import loader, pairrelay
from kgw_l4.pairrelay import HANDOVER_BYTES
from vm_tests.conftest import PY
from vm_tests.topology import GW_CLIENT_ADDR

TLSAPP = str(Path(__file__).resolve().parent / "tlsapp.py")


@pytest.mark.parametrize("mode", ["tc", "splice"])
def test_sni_routing_and_splice(lab, mode, tmp_path):
    from tests.l4.tlshelp import make_cert

    a, b, _ = lab.topo.backend_addrs
    for addr, name in ((a, "a.example.com"), (b, "b.example.com")):
        cert, key = make_cert(tmp_path, name)
        p = lab.topo.popen(lab.topo.backend, PY, TLSAPP, "serve", addr, "9443", str(cert), str(key),
                           stdout=subprocess.PIPE, text=True)
        lab.procs.append(p)
        assert p.stdout.readline().strip() == "ready"
    agent = lab.agent(mode=mode)
    cfg = {"tls_passthrough": [{"name": "tls", "address": GW_CLIENT_ADDR, "port": 8443, "routes": [
        {"name": "a", "hostnames": ["a.example.com"],
         "backends": [{"name": "a", "endpoints": [{"address": a, "port": 9443}]}]},
        {"name": "b", "hostnames": ["*.example.com"],
         "backends": [{"name": "b", "endpoints": [{"address": b, "port": 9443}]}]}]}]}
    out = agent.start(cfg)
    assert out["errors"] == {}

    def hello(sni: str, n: int = 1 << 20) -> dict:
        r = lab.topo.run(lab.topo.client, PY, TLSAPP, "hello", GW_CLIENT_ADDR, "8443", sni, str(n),
                         timeout=60)
        return json.loads(r.stdout)

    def check(sni: str, want: str | None, n: int = 1 << 20) -> None:
        got = hello(sni, n)
        detail = (got, {k: v for k, v in loader.counters(agent.maps(), agent.sizes).items()
                        if k.startswith("SPLICE")}, agent.log()[-1500:])
        if want is None:
            assert got["backend"] is None, detail
        else:
            assert got == {"backend": want, "ok": True}, detail

    check("a.example.com", a)
    check("www.example.com", b)
    check("nothing.org", None)  # no route: reset
    check("a.example.com", a, 4 << 20)
    c = loader.counters(agent.maps(), agent.sizes)
    # the bytes went through sockmap (redirected, or held and copied when a side lagged)
    # but for the first ones of each connection, which the pair relay copies until the
    # connection is handed to the splice (kgw_l4.pairrelay; sha256-checked by hello)
    copied = 3 * 2 * HANDOVER_BYTES if pairrelay.native() is not None else 0
    assert c["SPLICE_REDIRECT"][1] + c["SPLICE_HOLD"][1] > 2 * (6 << 20) - copied
