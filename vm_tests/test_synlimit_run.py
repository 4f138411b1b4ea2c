"""The connection rate limit end to end: `kgw run` on Gateway API YAML with a
TrafficPolicy ``connectionRateLimit`` on the Gateway; the kernel program drops one
source's excess SYNs to the HTTP listener while another source connects, and the policy
says Accepted. Only the pin directory is given (test isolation on a shared machine):
L4 mode, interfaces and workers are kgw's defaults."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from kgw_l4 import loader
from vm_tests.conftest import ROOT, SYSPY, wait_for
from vm_tests.test_synlimit import BURST, RATE, SECOND_CLIENT, SYNBURST
from vm_tests.topology import CLIENT_ADDR, GW_CLIENT_ADDR

ADMIN = "127.0.0.1:9095"  # kgw's default, inside the gw namespace
PORT = 8080

CONFIG = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: app}}
spec:
  gatewayClassName: kgw
  listeners: [{{name: http, protocol: HTTP, port: {PORT}}}]
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: syn-limit, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: web}}]
  connectionRateLimit: {{connectionsPerSecond: {RATE}, burst: {BURST}}}
"""


def admin(lab, path: str) -> dict:
    code = ("import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], "
            "timeout=5).read().decode())")
    r = lab.topo.run(lab.topo.gw, SYSPY, "-c", code, f"http://{ADMIN}{path}", check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def policy_accepted(lab) -> bool:
    items = admin(lab, "/status").get("items", [])
    pol = next((i for i in items if i["kind"] == "TrafficPolicy"), None)
    if not pol:
        return False
    ancestors = (pol.get("status") or {}).get("ancestors") or []
    return any(c["type"] == "Accepted" and c["status"] == "True"
               for a in ancestors for c in a.get("conditions", []))


@contextlib.contextmanager
def kgw_run(lab, tmp_path: Path) -> Iterator[str]:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(CONFIG)
    pin_dir = f"/sys/fs/bpf/kgw-run-{lab.topo.tag}"
    log = (tmp_path / "kgw.log").open("w")
    proc = lab.topo.popen(lab.topo.gw, sys.executable, "-m", "controller.cli", "run", "-c",
                          str(conf), "--l4-pin-dir", pin_dir, cwd=ROOT, stdout=log,
                          stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: policy_accepted(lab), timeout=60), \
            (tmp_path / "kgw.log").read_text()[-3000:]
        yield pin_dir
        assert proc.poll() is None, (tmp_path / "kgw.log").read_text()[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        loader.Loader(pin_dir).remove_pins()


def burst(lab, src: str, n: int, wait: float) -> dict:
    r = lab.topo.run(lab.topo.client, SYSPY, SYNBURST, src, GW_CLIENT_ADDR, str(PORT), str(n),
                     str(wait), timeout=wait + 20)
    return json.loads(r.stdout.strip().splitlines()[-1])


def inspect_counters(lab, pin_dir: str) -> dict[str, int]:
    r = lab.topo.run(lab.topo.gw, sys.executable, "-m", "kgw_l4.inspect", "--pin-dir", pin_dir,
                     "-o", "json", "counters", check=False)
    assert r.returncode == 0, r.stderr
    return {row["counter"]: row["packets"] for row in json.loads(r.stdout)}


def test_connection_rate_limit_from_a_traffic_policy(lab, tmp_path: Path) -> None:
    lab.topo.run(lab.topo.client, "ip", "addr", "add", f"{SECOND_CLIENT}/24", "dev", "c0")
    with kgw_run(lab, tmp_path) as pin_dir:
        flood = burst(lab, CLIENT_ADDR, 60, 1.0)
        assert BURST <= flood["connected"] <= BURST + 2 * RATE + 1, flood
        other = burst(lab, SECOND_CLIENT, BURST, 1.0)
        assert other == {"connected": BURST, "pending": 0}, other
        assert inspect_counters(lab, pin_dir).get("DROP_SYN_RATE", 0) >= 60 - flood["connected"]
