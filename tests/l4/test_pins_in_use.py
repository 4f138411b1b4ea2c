"""The kernel plane's pin directory, on the defaults a user gets (``kgw run -c DIR``,
/sys/fs/bpf/kgw): one instance at a time, and what it programmed stays programmed.

Every ``kgw run`` here runs in a private host (tests/netns.py). Processes that must share
one BPF filesystem (two instances, or kgw and a process writing into its maps) run
``beside`` one process, in its mount namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kgw_l4 import loader
from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

if loader.unavailable_reason():
    pytest.skip(f"kernel data plane: {loader.unavailable_reason()}", allow_module_level=True)

ADMIN = "http://127.0.0.1:9095"
BACKENDS = ("10.77.0.2", "10.77.0.3")

CONFIG = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp, namespace: l4}
spec:
  gatewayClassName: kgw
  listeners: [{name: db, protocol: TCP, port: 7000, allowedRoutes: {kinds: [{kind: TCPRoute}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: l4}
spec:
  parentRefs: [{name: tcp, sectionName: db}]
  rules: [{backendRefs: [{name: db, port: 9000}]}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: l4}
spec: {ports: [{name: db, port: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-x, namespace: l4, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: db, port: 9000}]
endpoints:
- {addresses: [10.77.0.2], conditions: {ready: true}}
- {addresses: [10.77.0.3], conditions: {ready: true}}
"""

#: run beside kgw: print the pinned Maglev row of frontend 0 (backend ids); with N [SECONDS],
#: first write N slots from 0 to backend id 63 (again every 0.1 s for SECONDS)
MAGLEV = """\
import json, sys, time
from kgw_l4 import abi
from kgw_l4.maps import PinnedMapSet
m = PinnedMapSet(abi.PIN_DIR).get("kgw_maglev")
size = abi.SIZES["KGW_MAGLEV_SIZE"]
if len(sys.argv) > 1:
    n, end = int(sys.argv[1]), time.monotonic() + float(sys.argv[2] if len(sys.argv) > 2 else 0)
    while True:
        m.update_many([(abi.u32(i), abi.u32(63)) for i in range(n)])
        if time.monotonic() >= end:
            break
        time.sleep(0.1)
print(json.dumps(abi.u32s_of(m.lookup_range(0, size))))
"""


@pytest.fixture
def conf(tmp_path: Path, host: Host) -> Path:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "tcp.yaml").write_text(CONFIG)
    # the backends' network (nobody answers there: these tests look at the maps)
    host.run("ip", "link", "add", "v0", "type", "veth", "peer", "name", "v0p")
    host.run("ip", "addr", "add", "10.77.0.1/24", "dev", "v0")
    for dev in ("v0", "v0p"):
        host.run("ip", "link", "set", dev, "up")
    return d


def listener(host: Host) -> dict:
    code, body = host.call(http_get, f"{ADMIN}/status")
    assert code == 200, body
    gw = next(i for i in json.loads(body)["items"] if i["kind"] == "Gateway")
    return {c["type"]: c for c in gw["status"]["listeners"][0]["conditions"]}


def programmed(host: Host) -> bool:
    """Ready, the frontend in the kernel plane's config dump, the listener Programmed."""
    if host.call(http_get, f"{ADMIN}/readyz")[0] != 200:
        return False
    dump = json.loads(host.call(http_get, f"{ADMIN}/config_dump")[1])
    fes = (dump.get("l4") or {}).get("frontends") or []
    return (dump["l4_mode"] == "tc" and [f["port"] for f in fes] == [7000]
            and listener(host)["Programmed"]["status"] == "True")


def inspect_frontends(host: Host, beside: int) -> list[dict]:
    r = host.run(sys.executable, "-m", "kgw_l4.inspect", "-o", "json", "frontends", beside=beside)
    return json.loads(r.stdout)


def metric(host: Host, name: str) -> float:
    text = host.call(http_get, f"{ADMIN}/metrics")[1].decode()
    return sum(float(v)
               for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def private_mounts(pid: int) -> bool:
    """True once process PID has its own mount namespace (and so its own /sys/fs/bpf)."""
    return os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def test_second_instance_is_refused_and_kill9_releases_the_pins(host: Host, conf: Path,
                                                                tmp_path: Path) -> None:
    # holds the BPF filesystem the instances share; "ready" once it is mounted
    keeper = host.popen(["sh", "-c", "echo ready; exec sleep 600"], stdout=subprocess.PIPE,
                        text=True)
    assert keeper.stdout is not None and keeper.stdout.readline().strip() == "ready"
    assert private_mounts(keeper.pid)
    first_log = (tmp_path / "first.log").open("w")
    first = host.popen(kgw_argv("run", "-c", str(conf)), beside=keeper.pid,
                       stdout=subprocess.DEVNULL, stderr=first_log)
    eventually(lambda: programmed(host), timeout=60)
    before = inspect_frontends(host, keeper.pid)
    assert [len(f["backends"]) for f in before] == [2], before

    # a second instance with a configuration of its own (nothing in it: it would remove the
    # first one's frontend) and its own admin address, so that only the pins are shared
    empty = tmp_path / "empty"
    empty.mkdir()
    second = host.popen(kgw_argv("run", "-c", str(empty), "--admin-address", "127.0.0.1:9096"),
                        beside=keeper.pid, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True)
    _, err = second.communicate(timeout=30)
    assert second.returncode == 1, err
    assert f"PID {first.pid}" in err and "/sys/fs/bpf/kgw" in err and "--l4-pin-dir" in err, err
    assert "Traceback" not in err, err

    # nor does kgw-inspect cleanup take the pins from under it
    r = host.run(sys.executable, "-m", "kgw_l4.inspect", "cleanup", beside=keeper.pid, check=False)
    assert (r.returncode == 1
            and f"kgw (PID {first.pid}) is running with pin directory /sys/fs/bpf/kgw"
            in r.stderr), r

    # the first instance keeps its maps, its status and its service
    assert first.poll() is None
    assert inspect_frontends(host, keeper.pid) == before
    assert programmed(host)

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    third_log = tmp_path / "third.log"
    with third_log.open("w") as f:
        host.popen(kgw_argv("run", "-c", str(conf)), beside=keeper.pid, stdout=subprocess.DEVNULL,
                   stderr=f)
    eventually(lambda: programmed(host), timeout=60)
    assert "adopted 1 frontends and 2 backends" in third_log.read_text()
    assert [len(f["backends"]) for f in inspect_frontends(host, keeper.pid)] == [2]


def test_maps_changed_from_outside_are_repaired_and_reported(host: Host, conf: Path,
                                                             tmp_path: Path) -> None:
    log_path = tmp_path / "kgw.log"
    with log_path.open("w") as f:
        kgw = host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL, stderr=f,
                         env={**os.environ, "KGW_L4_DRIFT_INTERVAL": "0.5"})
    eventually(lambda: programmed(host), timeout=60)
    assert private_mounts(kgw.pid)
    eventually(lambda: metric(host, "kgw_l4_drift_checks_total") >= 1, timeout=10)
    assert metric(host, "kgw_l4_drift_repairs_total") == 0
    row = json.loads(host.run(sys.executable, "-c", MAGLEV, beside=kgw.pid).stdout)
    assert set(row) == {0, 1}

    # another process writes 100 Maglev slots to a backend id kgw never programmed
    wrong = json.loads(host.run(sys.executable, "-c", MAGLEV, "100", beside=kgw.pid).stdout)
    assert wrong[:100] == [63] * 100

    eventually(lambda: metric(host, "kgw_l4_drift_repairs_total") == 100, timeout=10)
    assert json.loads(host.run(sys.executable, "-c", MAGLEV, beside=kgw.pid).stdout) == row
    log = log_path.read_text()
    assert (
        "changed outside kgw (100 kgw_maglev entries wrong; frontends affected: l4/tcp/db): "
        "rewritten" in log), log

    # Programmed again once a check finds the maps intact
    eventually(lambda: listener(host)["Programmed"]["status"] == "True", timeout=10)
    assert "kernel maps intact again for l4/tcp/db" in log_path.read_text()

    # while something keeps writing, the listener is not Programmed and says why
    fighter = host.popen([sys.executable, "-c", MAGLEV, "3", "4"], beside=kgw.pid,
                         stdout=subprocess.DEVNULL)
    cond = eventually(lambda: (c := listener(host)["Programmed"])["status"] == "False" and c,
                      timeout=10)
    assert "kernel maps under /sys/fs/bpf/kgw were changed outside kgw" in cond["message"], cond
    assert "3 kgw_maglev entries wrong" in cond["message"], cond
    assert cond["reason"] == "Invalid", cond
    fighter.wait(20)
    eventually(lambda: listener(host)["Programmed"]["status"] == "True", timeout=10)
    assert json.loads(host.run(sys.executable, "-c", MAGLEV, beside=kgw.pid).stdout) == row
    assert metric(host, "kgw_l4_drift_repairs_total") > 100
