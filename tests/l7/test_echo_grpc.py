"""``kgw echo`` gRPC mode: upstream echo-basic's GrpcEcho service, as the suite's
grpc-infra-backend Deployments run it (GRPC_ECHO_SERVER, TLS_SERVER_CERT,
TLS_SERVER_PRIV_KEY), called with grpcio as the conformance harness calls it."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from conformance import grpc_requests as gq
from conformance.certs import self_signed
from kgw_l7 import protoc
from kgw_l7.echo import grpcecho as grpc_echo
from .conftest import ROOT, free_port, wait_port

SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"


def _start(tmp: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TLS_", "TCP_", "UDP_", "HTTP", "GRPC_", "H2C_"))}
    return subprocess.Popen([sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1", *args],
                            stdout=open(tmp / "echo.log", "wb"), stderr=subprocess.STDOUT,
                            env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def grpc_echo_pod(tmp_path_factory: pytest.TempPathFactory):
    """The echo as grpc-infra-backend-v1 runs it: chosen by the environment, clear text
    on HTTP_PORT, TLS on HTTPS_PORT with the certificate and key files."""
    tmp = tmp_path_factory.mktemp("grpcecho")
    pair = self_signed(["abc.example.com"])
    (tmp / "crt").write_bytes(pair.cert_pem)
    (tmp / "key").write_bytes(pair.key_pem)
    plain, tls = free_port(), free_port()
    proc = _start(tmp, [],
                  {"GRPC_ECHO_SERVER": "1", "HTTP_PORT": str(plain), "HTTPS_PORT": str(tls),
                   "POD_NAME": "grpc-infra-backend-v1-abcdefghij-klmno", "NAMESPACE": "infra",
                   "SERVICE_NAME": "grpc-infra-backend-v1", "TLS_SERVER_CERT": str(tmp / "crt"),
                   "TLS_SERVER_PRIV_KEY": str(tmp / "key")})
    try:
        wait_port("127.0.0.1", plain)
        wait_port("127.0.0.1", tls)
        yield plain, tls, pair.cert_pem, tmp
    finally:
        _stop(proc)


def _case(method: str, authority: str = "",
          metadata: tuple[tuple[str, str], ...] = ()) -> gq.GrpcCase:
    return gq.GrpcCase(method=method, authority=authority, metadata=metadata)


def test_echo_reports_method_metadata_authority_and_pod(grpc_echo_pod) -> None:
    plain, _, _, _ = grpc_echo_pod
    with gq.GrpcClient(f"127.0.0.1:{plain}", "foo.example.com") as client:
        resp = client.send(_case("EchoTwo", metadata=(("X-Version", "two"), ("color", "blue"))))
    assert resp.code is grpc.StatusCode.OK, resp.details
    a = resp.response.assertions
    assert a.fully_qualified_method == f"/{SERVICE}/EchoTwo"
    assert a.authority == "foo.example.com"
    headers = [(h.key, h.value) for h in a.headers]
    assert (":authority", "foo.example.com") in headers  # as grpc-go reports it
    assert ("x-version", "two") in headers and ("color", "blue") in headers
    assert (a.context.namespace, a.context.pod, a.context.service_name) == (
        "infra", "grpc-infra-backend-v1-abcdefghij-klmno", "grpc-infra-backend-v1")
    assert not a.HasField("tls_assertions")


def test_echo_three_is_unimplemented_and_unknown_methods_too(grpc_echo_pod) -> None:
    plain, _, _, _ = grpc_echo_pod
    with gq.GrpcClient(f"127.0.0.1:{plain}") as client:
        resp = client.send(_case("EchoThree"))
        assert resp.code is grpc.StatusCode.UNIMPLEMENTED
        assert "EchoThree" in resp.details
        other = client._channel.unary_unary("/other.Service/Echo")  # type: ignore[union-attr]
        with pytest.raises(grpc.RpcError) as err:
            other(b"", timeout=5)
        assert err.value.code() is grpc.StatusCode.UNIMPLEMENTED


def test_tls_port_reports_the_handshake(grpc_echo_pod) -> None:
    """Over TLS the echo reports what its TLS saw, as echo-basic does: the SNI, ALPN h2,
    the version and the cipher (what kgw's upstream h2-over-TLS will be checked with)."""
    _, tls, cert, _ = grpc_echo_pod
    pb, services = protoc.load(grpc_echo.PROTO)
    creds = grpc.ssl_channel_credentials(root_certificates=cert)
    with grpc.secure_channel(f"127.0.0.1:{tls}", creds,
                             options=[("grpc.ssl_target_name_override", "abc.example.com")]) as ch:
        resp = services.GrpcEchoStub(ch).Echo(pb.EchoRequest(), timeout=5)
    t = resp.assertions.tls_assertions
    assert (t.server_name, t.negotiated_protocol, t.version) == ("abc.example.com", "h2", "TLSv1.3")
    assert t.cipher_suite
    assert resp.assertions.authority == "abc.example.com"
    assert resp.assertions.context.pod == "grpc-infra-backend-v1-abcdefghij-klmno"


def test_tls_port_needs_alpn_h2_like_grpc_go(grpc_echo_pod) -> None:
    """A TLS client that does not negotiate h2 is disconnected after the handshake."""
    _, tls, cert, tmp = grpc_echo_pod
    ctx = ssl.create_default_context(cadata=cert.decode())
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", tls), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="abc.example.com") as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100) == b""
    assert "is not h2" in (tmp / "echo.log").read_text()


def test_each_call_is_logged(grpc_echo_pod) -> None:
    plain, _, _, tmp = grpc_echo_pod
    with gq.GrpcClient(f"127.0.0.1:{plain}") as client:
        assert client.send(_case("Echo")).code is grpc.StatusCode.OK
    assert f"Received over plaintext: /{SERVICE}/Echo" in (tmp / "echo.log").read_text()


def test_grpc_mode_is_one_mode_and_says_what_is_missing(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "kgw_l7.echo", "--grpc-port", "1", "--udp-port",
                           "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "different modes" in proc.stderr
    port = free_port()
    with socket.socket() as taken:  # a port in use is an error, not a shared port
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = subprocess.run([sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1",
                               "--grpc-port",
                               str(port)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "cannot listen" in proc.stderr


def test_proto_is_compiled_once_per_process_and_errors_name_the_file(tmp_path: Path) -> None:
    assert protoc.load(grpc_echo.PROTO) is protoc.load(grpc_echo.PROTO)
    bad = tmp_path / "broken_kgw.proto"
    bad.write_text('syntax = "proto3";\nmessage {\n')
    with pytest.raises(protoc.ProtoError, match="broken_kgw.proto: protoc failed"):
        protoc.load(bad)
    with pytest.raises(protoc.ProtoError, match="no such"):
        protoc.load(tmp_path / "absent.proto")


def test_without_grpcio_tools_the_error_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grpc_tools", None)  # as if not installed
    proto = tmp_path / "absent_tools_kgw.proto"
    proto.write_text('syntax = "proto3";\n')
    with pytest.raises(protoc.ProtoError, match=r"pip install 'kgw\[grpc\]'"):
        protoc.load(proto)
