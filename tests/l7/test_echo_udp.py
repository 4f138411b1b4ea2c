"""``kgw echo`` UDP mode: chosen by the Deployment's environment (UDP_ECHO_SERVER,
UDP_PORT) as the suite's UDPRoute manifests run it; each datagram answered to its sender."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import requests as rq
from kgw_l7 import echo
from .conftest import ROOT


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(tmp / "echo.log", "wb")
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("TCP_ECHO_SERVER", "UDP_ECHO_SERVER", "UDP_PORT", "TCP_PORT")}
    full_env.update({"PYTHONPATH": str(ROOT), **env})
    return subprocess.Popen([sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1", *args],
                            stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_udp(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rq.udp_probe(f"127.0.0.1:{port}", timeout=0.2) is None:
            return
        time.sleep(0.05)
    raise AssertionError(f"no UDP echo on {port}")


@pytest.fixture(scope="module")
def udp_echo(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("udpecho")
    port = _free_udp_port()
    proc = _start(tmp, [], {"UDP_ECHO_SERVER": "1", "UDP_PORT": str(port),
                            "POD_NAME": "udp-backend-v1-abcde12345-fghij", "NAMESPACE": "infra",
                            "SERVICE_NAME": "udp-backend-v1"})
    try:
        _wait_udp(port)
        yield port, tmp
    finally:
        _stop(proc)


def test_answers_each_datagram_with_the_pod_context(udp_echo):
    port, tmp = udp_echo
    doc = rq.udp_exchange(f"127.0.0.1:{port}")
    assert doc["pod"] == "udp-backend-v1-abcde12345-fghij"
    assert doc["namespace"] == "infra"
    assert doc["service"] == "udp-backend-v1"
    assert rq.validate_udp_payload(doc, "udp-backend-v1", "infra") is None
    assert "service" in rq.validate_udp_payload(doc, "udp-backend-v2", "infra")
    assert "namespace" in rq.validate_udp_payload(doc, "udp-backend-v1", "other")
    assert rq.udp_echo_pod(f"127.0.0.1:{port}").startswith("udp-backend-v1-")
    assert "Echoing back UDP datagram" in (tmp / "echo.log").read_text()


def test_upstream_envelope_binary_and_large_datagrams(udp_echo):
    """echo-basic's udpechoserver: every datagram, PING included, is answered with JSON
    carrying the datagram as ``request`` and the pod context."""
    port, _ = udp_echo
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.send(b"PING")
        assert json.loads(s.recv(65535)) == {"request": "PING", "namespace": "infra", "ingress": "",
                                              "service": "udp-backend-v1",
                                             "pod": "udp-backend-v1-abcde12345-fghij"}
        s.send(b"\xff\x00abc")
        assert json.loads(s.recv(65535))["request"] == "\ufffd\x00abc"
        big = "x" * 60000
        s.send(big.encode())
        assert json.loads(s.recv(65535))["request"] == big


def test_answer_never_exceeds_a_datagram():
    e = echo.UdpEcho("p-a-b", "ns", "svc", "", 8080)
    out = e.answer(b"\xff" * 65000)  # each byte becomes a 6-byte JSON escape
    assert len(out) <= 65535
    assert json.loads(out)["truncated"] is True
    assert json.loads(e.answer(b"hi"))["request"] == "hi"


def test_modes_exclude_each_other_and_bad_udp_port_is_refused(tmp_path):
    proc = _start(tmp_path, ["--udp-port", "1", "--tcp-port", "2"], {})
    assert proc.wait(10) == 2
    assert "different modes" in (tmp_path / "echo.log").read_text()
    proc = _start(tmp_path, [], {"UDP_ECHO_SERVER": "1", "UDP_PORT": "nope"})
    assert proc.wait(10) == 2
    assert "UDP_PORT" in (tmp_path / "echo.log").read_text()
