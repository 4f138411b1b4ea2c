"""bench/l4/healthcheck_cost.py's ``--topology veth`` (and the L7 bench reusing it): the
endpoints answer only inside their own namespace behind the veth pair, the run's probes
all pass, the node end's napi kthread is found and counted, and both namespaces are gone
afterwards. Run as a subprocess: the bench moves its own process into the node namespace.
Root only (network namespaces)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("ethtool")),
    reason="needs root, ip and ethtool (network namespaces, veth)")

ARGS = ["--topology", "veth", "--endpoints", "40", "--interval", "0.2", "--seconds", "1",
        "--timeout", "0.5"]


def _run(module: str, *extra: str) -> tuple[str, int]:
    proc = subprocess.Popen([sys.executable, "-m", module, *ARGS, *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return out, proc.pid


def _left(pid: int) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    return [n for n in names.split() if n in (f"hcnode{pid}", f"hcback{pid}")]


def test_l4_bench_probes_through_the_veth_and_counts_the_node_kthread():
    out, pid = _run("bench.l4.healthcheck_cost")
    m = re.search(r"(\d+) checks in [\d.]+s \(\d+/s\), (\d+) failed", out)
    assert m, out
    assert int(m.group(1)) >= 100 and m.group(2) == "0", out
    assert "(tcp, veth)" in out and "node napi kthread" in out, out
    assert not _left(pid)


def test_l7_bench_tcp_checks_through_the_veth():
    out, pid = _run("bench.l7.healthcheck_cost", "--type", "TCP")
    m = re.search(r"(\d+) checks in [\d.]+s \(\d+/s\), (\d+) failed", out)
    assert m, out
    assert int(m.group(1)) >= 100 and m.group(2) == "0", out
    assert "with the node's napi kthread" in out, out
    assert not _left(pid)
