"""Kernel-test fixtures: skip cleanly where BPF cannot run, build a namespace topology
per test, run the L4 agent in the gw namespace as a subprocess, clean up always."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kgw_l4 import abi, loader  # noqa: E402
from kgw_l4.maps import PinnedMapSet  # noqa: E402
from vm_tests.topology import GW_CLIENT_ADDR, Topology  # noqa: E402

NETAPP = str(Path(__file__).resolve().parent / "netapp.py")
LOSSY = str(Path(__file__).resolve().parent / "lossy.py")
PY = sys.executable
SYSPY = shutil.which("python3") or PY

#: small tables keep compile, load and adoption fast; KGW_MAGLEV_SIZE stays default
TEST_SIZES = dict(abi.SIZES, KGW_MAX_FRONTENDS=8, KGW_MAX_BACKENDS=64, KGW_CT_SIZE=16384,
                  KGW_CT_SYN_SIZE=4096)
#: a short splice backlog, so that the backpressure tests hold directions soon
HOLD_SIZES = dict(TEST_SIZES, KGW_SPLICE_BACKLOG_MAX=64)


def _skip_reason() -> str | None:
    reason = loader.unavailable_reason()
    if reason:
        return f"kernel tests need BPF: {reason}"
    for tool in ("ip", "nsenter", "ethtool"):
        if shutil.which(tool) is None:
            return f"kernel tests need {tool}"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


class Agent:
    """`python -m kgw_l4 agent` in the gw namespace."""

    def __init__(self, topo: Topology, cfg_path: Path, pin_dir: str, mode: str = "tc",
                 sizes: dict | None = None, settings: dict | None = None,
                 interfaces: str = "gc,gb", extra: list[str] | None = None):
        self.topo, self.cfg_path, self.pin_dir, self.mode = topo, cfg_path, pin_dir, mode
        self.sizes = sizes or TEST_SIZES
        self.settings = settings or {}
        self.interfaces = interfaces
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None

    def start(self, config: dict) -> dict:
        self.cfg_path.write_text(json.dumps(config))
        cmd = [PY, "-m", "kgw_l4", "agent", "--config", str(self.cfg_path), "--mode", self.mode,
               "--interfaces", self.interfaces, "--pin-dir", self.pin_dir,
               "--sizes", json.dumps(self.sizes), "--settings", json.dumps(self.settings),
               *self.extra]
        self.log_path = self.cfg_path.with_suffix(".log")
        self._log = open(self.log_path, "a")
        self.proc = self.topo.popen(self.topo.gw, *cmd, stdout=subprocess.PIPE,
                                    stderr=self._log, text=True, cwd=str(ROOT))
        return self._read()

    def log(self) -> str:
        return self.log_path.read_text() if hasattr(self, "log_path") else ""

    def _read(self) -> dict:
        assert self.proc and self.proc.stdout
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"agent exited: {self.log()[-2000:]}")
        return json.loads(line)

    def apply(self, config: dict) -> dict:
        self.cfg_path.write_text(json.dumps(config))
        assert self.proc
        self.proc.send_signal(signal.SIGHUP)
        return self._read()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def maps(self) -> PinnedMapSet:
        return PinnedMapSet(self.pin_dir)


def frontend(name: str, port: int, groups: list[tuple[str, int, list[str]]],
             backend_port: int = 9000, address: str = GW_CLIENT_ADDR) -> dict:
    return {"name": name, "address": address, "port": port, "protocol": "TCP",
            "backends": [{"name": g, "weight": w,
                          "endpoints": [{"address": a, "port": backend_port} for a in addrs]}
                         for g, w, addrs in groups]}


class Lab:
    """A topology with servers on every backend address and helpers to run clients."""

    def __init__(self, topo: Topology, tmp: Path):
        self.topo = topo
        self.tmp = tmp
        self.pin_dir = f"/sys/fs/bpf/kgw-test-{topo.tag}"
        self.agents: list[Agent] = []
        self.procs: list[subprocess.Popen] = []

    def serve(self) -> None:
        p = self.topo.popen(self.topo.backend, SYSPY, NETAPP, "serve", *self.topo.backend_addrs,
                            stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout and p.stdout.readline().strip() == "ready"

    def agent(self, **kw) -> Agent:
        a = Agent(self.topo, self.tmp / f"l4-{len(self.agents)}.json", self.pin_dir, **kw)
        self.agents.append(a)
        return a

    def client(self, *args: str, timeout: float = 120) -> object:
        r = self.topo.run(self.topo.client, SYSPY, NETAPP, *args, timeout=timeout, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"client {args} failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    def client_bg(self, *args: str) -> subprocess.Popen:
        p = self.topo.popen(self.topo.client, SYSPY, NETAPP, *args, stdout=subprocess.PIPE,
                            text=True)
        self.procs.append(p)
        return p

    @contextlib.contextmanager
    def lossy(self, ns: str, *devs: str, permille: int = 20) -> Iterator[dict]:
        """Random loss of packets coming into DEVS of namespace NS while the block runs
        (vm_tests/lossy.py); afterwards the dict holds {"seen": N, "dropped": M}."""
        p = self.topo.popen(ns, PY, LOSSY, str(permille), *devs, stdout=subprocess.PIPE,
                            text=True)
        counts: dict = {}
        try:
            assert p.stdout and p.stdout.readline().strip() == "ready", "lossy.py did not start"
            yield counts
        finally:
            p.terminate()
            lines = p.communicate(timeout=20)[0].strip().splitlines()
            if lines and lines[-1].startswith("{"):
                counts.update(json.loads(lines[-1]))

    def close(self) -> None:
        for a in self.agents:
            a.stop()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        self.topo.close()  # deleting the namespaces removes veths and their programs
        loader.Loader(self.pin_dir).remove_pins()


@pytest.fixture
def lab(tmp_path):
    topo = Topology(backends=3)
    topo.__enter__()
    lab = Lab(topo, tmp_path)
    try:
        lab.serve()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def xdp_lab(tmp_path):
    topo = Topology(backends=3, xdp_ready=True)
    topo.__enter__()
    lab = Lab(topo, tmp_path)
    try:
        lab.serve()
        yield lab
    finally:
        lab.close()


def wait_for(pred, timeout: float = 10.0, interval: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


os.environ.setdefault("PYTHONUNBUFFERED", "1")


def share_ok(count: int, n: int, expected: float, sigmas: float = 4.5) -> bool:
    """Whether `count` of `n` flows is a plausible draw for a backend owning `expected` of
    the Maglev table. Source ports are random, so the count is binomial: a fixed tolerance
    such as +-0.05 at n=400 is only 2.3 sigma and fails about one run in fifty. 4.5 sigma
    (plus one percent for the table's own rounding) fails about once in 150 000 runs while
    still catching a wrong weight (0.25 vs 0.5 is 11 sigma apart at n=400)."""
    sd = math.sqrt(expected * (1 - expected) / n)
    return abs(count / n - expected) <= sigmas * sd + 0.01
