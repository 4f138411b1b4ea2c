"""``kgw echo`` TCP mode: echo-basic's tcpserver line protocol, plain and over TLS, as the
conformance suite's TCP helpers (welcome, PING, IS_TLS, TEST) and weighted probes use it."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conformance import requests as rq
from conformance.certs import CA, self_signed
from kgw_l7 import echo
from .conftest import ROOT, free_port, wait_port

WELCOME = b"Gateway API Test TCP Server\n"


def _lines(sock: socket.socket, n: int) -> list[bytes]:
    """Read exactly ``n`` newline-terminated lines."""
    buf = b""
    while buf.count(b"\n") < n:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"connection closed after {buf!r}")
        buf += chunk
    return [line + b"\n" for line in buf.split(b"\n")[:n]]


def _start(tmp: Path, args: list[str],
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    log = open(tmp / "echo.log", "wb")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    for name in ("TCP_ECHO_SERVER", "TCP_PORT", "TLS_PORT", "TLS_SERVER_CERT",
                 "TLS_SERVER_PRIV_KEY"):
        if env is None or name not in env:
            full_env.pop(name, None)
    return subprocess.Popen([sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1", *args],
                            stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def tcp_echo(tmp_path_factory: pytest.TempPathFactory):
    """A TCP-mode echo chosen by the Deployment's environment (TCP_ECHO_SERVER, TCP_PORT,
    TLS_PORT, TLS_SERVER_CERT, TLS_SERVER_PRIV_KEY), as the suite's tcp-backend runs."""
    tmp = tmp_path_factory.mktemp("tcpecho")
    pair = self_signed(["abc.example.com"])
    (tmp / "crt").write_bytes(pair.cert_pem)
    (tmp / "key").write_bytes(pair.key_pem)
    tcp_port, tls_port = free_port(), free_port()
    proc = _start(tmp, ["--pod", "tcp-backend-abc-12345", "--namespace", "infra"], env={
        "TCP_ECHO_SERVER": "1", "TCP_PORT": str(tcp_port), "TLS_PORT": str(tls_port),
        "TLS_SERVER_CERT": str(tmp / "crt"), "TLS_SERVER_PRIV_KEY": str(tmp / "key"),
        "SERVICE_NAME": "tcp-backend"})
    try:
        wait_port("127.0.0.1", tcp_port)
        wait_port("127.0.0.1", tls_port)
        yield tcp_port, tls_port, pair.cert_pem
    finally:
        _stop(proc)


def test_plain_connection_answers_welcome_ping_is_tls_and_test(tcp_echo):
    tcp_port, tls_port, _ = tcp_echo
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
        assert _lines(s, 1) == [WELCOME]
        s.sendall(b"PING\n")
        assert _lines(s, 1) == [b"PONG\n"]
        s.sendall(b"IS_TLS\n")
        assert _lines(s, 1) == [b"false\n"]
        s.sendall(b"TEST\n")
        doc = json.loads(_lines(s, 1)[0])
    assert doc == {"namespace": "infra", "ingress": "", "service": "tcp-backend",
                   "pod": "tcp-backend-abc-12345", "tcpport": str(tcp_port),
                   "tlsport": str(tls_port), "isTLS": False}


def test_unknown_lines_are_ignored_and_pipelined_lines_answered_in_order(tcp_echo):
    tcp_port, _, _ = tcp_echo
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
        assert _lines(s, 1) == [WELCOME]
        s.sendall(b"HELLO\r\nPING\r\nIS_TLS\nPI")
        assert _lines(s, 2) == [b"PONG\n", b"false\n"]
        s.sendall(b"NG\n")
        assert _lines(s, 1) == [b"PONG\n"]


def test_an_overlong_line_ends_the_connection(tcp_echo):
    tcp_port, _, _ = tcp_echo
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
        assert _lines(s, 1) == [WELCOME]
        s.sendall(b"x" * (echo.TCP_MAX_LINE + 10))
        rest = b""
        while chunk := s.recv(4096):
            rest += chunk
        assert rest == b""


def test_tls_connection_reports_tls_and_the_server_name(tcp_echo):
    _, tls_port, cert_pem = tcp_echo
    ctx = ssl.create_default_context(cadata=cert_pem.decode())
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="abc.example.com") as s:
            assert _lines(s, 1) == [WELCOME]
            s.sendall(b"IS_TLS\nTEST\n")
            is_tls, payload = _lines(s, 2)
            version = s.version()
    assert is_tls == b"true\n"
    doc = json.loads(payload)
    assert doc["isTLS"] is True and doc["pod"] == "tcp-backend-abc-12345"
    assert doc["tls"]["serverName"] == "abc.example.com"
    assert doc["tls"]["version"] == {"TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}[version]
    assert doc["tls"]["cipherSuite"]
    assert "negotiatedProtocol" not in doc["tls"]  # no ALPN offered by either side


def test_tcp_port_flag_without_certificate_serves_plain_only(tmp_path):
    port = free_port()
    proc = _start(tmp_path, ["--tcp-port", str(port), "--pod", "p-a-b", "--namespace", "ns"])
    try:
        wait_port("127.0.0.1", port)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert _lines(s, 1) == [WELCOME]
            s.sendall(b"TEST\n")
            doc = json.loads(_lines(s, 1)[0])
        assert doc["pod"] == "p-a-b" and doc["isTLS"] is False and "tls" not in doc
        assert proc.poll() is None
    finally:
        _stop(proc)


def test_bad_tcp_port_environment_is_a_clear_error(tmp_path):
    proc = _start(tmp_path, [], env={"TCP_ECHO_SERVER": "1", "TCP_PORT": "nope"})
    assert proc.wait(10) == 2
    assert b"non-integer value in TCP_PORT" in (tmp_path / "echo.log").read_bytes()


# -- the conformance harness's TCP client against this echo ---------------------------


def test_harness_tcp_probe_passes_plain_and_tls_and_names_mismatches(tcp_echo):
    tcp_port, tls_port, cert_pem = tcp_echo
    plain = rq.TcpTarget(f"127.0.0.1:{tcp_port}")
    assert rq.tcp_probe(plain, rq.TcpExpectation("tcp-backend", "infra")) is None
    # a completed exchange with a wrong answer fails at once (upstream's assertions), not retried
    with pytest.raises(rq.WrongAnswer, match="TLS response does not match"):
        rq.tcp_probe(plain, rq.TcpExpectation("tcp-backend", "infra", True))
    with pytest.raises(rq.WrongAnswer, match="namespace"):
        rq.tcp_probe(plain, rq.TcpExpectation("tcp-backend", "web"))
    tls = rq.TcpTarget(f"127.0.0.1:{tls_port}", use_tls=True, server_name="abc.example.com",
                       ca_pem=cert_pem)
    assert rq.tcp_probe(tls,
                        rq.TcpExpectation("tcp-backend", "infra", True, "abc.example.com")) is None
    wrong_name = rq.TcpTarget(f"127.0.0.1:{tls_port}", use_tls=True, server_name="x.example.com",
                              ca_pem=cert_pem)
    assert "could not connect" in rq.tcp_probe(wrong_name,
                                               rq.TcpExpectation("tcp-backend", "infra", True))
    assert rq.tcp_echo_pod(f"127.0.0.1:{tcp_port}") == "tcp-backend-abc-12345"


def test_harness_tcp_probe_rejects_a_foreign_welcome() -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        t = threading.Thread(target=serve)
        t.start()
        with pytest.raises(rq.WrongAnswer, match="welcome message does not match"):
            rq.tcp_probe(rq.TcpTarget(f"127.0.0.1:{port}"), rq.TcpExpectation("b", "ns"), timeout=5)
        t.join()


def test_harness_tls_rejection_means_eof_or_reset_not_a_handshake(tcp_echo):
    _, tls_port, _ = tcp_echo
    # a completed (or certificate-failed) handshake is not a rejection
    assert rq.tls_rejection_probe(f"127.0.0.1:{tls_port}", "abc.example.com") is not None
    # a refused dial is not a rejection either
    assert "could not connect" in rq.tls_rejection_probe(f"127.0.0.1:{free_port()}",
                                                         "abc.example.com")
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]

        def close_after_hello() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(4096)  # the ClientHello; then close, as a proxy with no route for the SNI

        t = threading.Thread(target=close_after_hello)
        t.start()
        assert rq.tls_rejection_probe(f"127.0.0.1:{port}", "non.matching.com", timeout=5) is None
        t.join()


def test_harness_trusts_a_ca_issued_leaf_as_an_anchor_like_go(tmp_path):
    """Upstream trusts the served certificate itself (Go's pool makes any certificate
    an anchor), also when a CA issued it."""
    leaf = CA.new("some-ca").issue(["abc.example.com"])
    (tmp_path / "crt").write_bytes(leaf.cert_pem)
    (tmp_path / "key").write_bytes(leaf.key_pem)
    tcp_port, tls_port = free_port(), free_port()
    proc = _start(tmp_path,
                  ["--tcp-port", str(tcp_port), "--tls-port", str(tls_port), "--pod", "b-x-y",
                   "--namespace", "ns", "--tls-cert", str(tmp_path / "crt"),
                   "--tls-key", str(tmp_path / "key")])
    try:
        wait_port("127.0.0.1", tls_port)
        target = rq.TcpTarget(f"127.0.0.1:{tls_port}", use_tls=True, server_name="abc.example.com",
                              ca_pem=leaf.cert_pem)
        assert rq.tcp_probe(target, rq.TcpExpectation("b", "ns", True, "abc.example.com")) is None
        other = CA.new("other-ca").issue(["abc.example.com"])
        untrusted = rq.TcpTarget(target.address, use_tls=True, server_name="abc.example.com",
                                 ca_pem=other.cert_pem)
        assert "could not connect" in rq.tcp_probe(untrusted, rq.TcpExpectation("b", "ns", True))
    finally:
        _stop(proc)
