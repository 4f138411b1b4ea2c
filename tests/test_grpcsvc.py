"""The gRPC fixtures (tests/grpcsvc.py) against themselves, with no proxy between: every
call type, 16 MiB messages both ways, failures with a given status, hangs and long
streams ended by the client, the health service, a server killed mid-stream."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import grpc
import pytest

from tests.grpcsvc import (MAX_MESSAGE, SERVICE, GrpcTestClient, GrpcTestServer, pattern,
                           spawn_server)

MIB = 1 << 20


@pytest.fixture(scope="module")
def server():
    with GrpcTestServer("alpha") as s:
        yield s


@pytest.fixture
def client(server: GrpcTestServer):
    with GrpcTestClient(server.address, authority="svc.example.com") as c:
        yield c


def test_unary_echoes_and_reports_what_it_saw(server: GrpcTestServer,
                                              client: GrpcTestClient) -> None:
    r = client.unary(payload=b"hello", metadata=[("x-trace", "t1")], trailers={"x-done": "yes"})
    assert r.ok, r.details
    reply = r.reply
    assert (reply.payload, reply.received, reply.received_bytes) == (b"hello", 1, 5)
    assert reply.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert (reply.server, reply.method, reply.authority) == ("alpha", f"/{SERVICE}/Unary",
                                                             "svc.example.com")
    assert ("x-trace", "t1") in [(m.key, m.value) for m in reply.metadata]
    assert ("x-done", "yes") in r.trailing_metadata
    rec = server.wait_calls(lambda c: c.header("x-trace") == ["t1"])[0]
    assert (rec.outcome, rec.authority, rec.received, rec.sent) == ("ok", "svc.example.com", 1, 1)


def test_sixteen_mib_both_ways(client: GrpcTestClient) -> None:
    big = os.urandom(16 * MIB)
    r = client.unary(payload=big, response_size=16 * MIB, timeout=30)
    assert r.ok, r.details
    assert r.reply.received_bytes == len(big) and r.reply.sha256 == hashlib.sha256(big).hexdigest()
    assert r.reply.payload == pattern(16 * MIB)
    # beyond the limit both sides set: refused, not hung
    r = client.unary(payload=b"x" * (MAX_MESSAGE + 1), timeout=30)
    assert r.code is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_client_stream_counts_and_hashes_every_message(client: GrpcTestClient) -> None:
    parts = [os.urandom(n) for n in (1, 1000, 3 * MIB)]
    r = client.client_stream([client.call(payload=p) for p in parts]
                             + [client.call(response_size=10)])
    assert r.ok, r.details
    assert (r.reply.received, r.reply.received_bytes) == (4, sum(map(len, parts)))
    assert r.reply.sha256 == hashlib.sha256(
        b"".join(parts)).hexdigest() and r.reply.payload == pattern(10)


def test_server_stream_sends_count_replies_interval_apart(client: GrpcTestClient) -> None:
    started = time.monotonic()
    r = client.server_stream(count=5, interval_ms=50, response_size=100)
    assert r.ok, r.details
    assert [x.index for x in r.replies] == [0, 1, 2, 3,
                                            4] and all(x.payload == pattern(100) for x in r.replies)
    assert time.monotonic() - started >= 0.19


def test_bidi_answers_each_message_as_it_arrives(client: GrpcTestClient) -> None:
    """A reply comes back before the next message is sent: a real stream, not a batch."""
    sent: list[int] = []
    got: list[int] = []
    ready = threading.Event()

    def messages():
        for i in range(3):
            sent.append(i)
            yield client.call(payload=b"%d" % i, count=2)
            assert ready.wait(5), "no reply to the previous message"
            ready.clear()

    call = client.stub.Bidi(messages(), timeout=10)
    for reply in call:
        got.append(reply.index)
        if reply.index % 2 == 1:
            assert len(sent) == reply.received  # answered before the next message was sent
            ready.set()
    assert got == [0, 1, 2, 3, 4, 5] and call.code() is grpc.StatusCode.OK


@pytest.mark.parametrize("kind", ["unary", "client_stream", "server_stream", "bidi"])
def test_every_call_type_fails_with_the_status_asked(server: GrpcTestServer, client: GrpcTestClient,
                                                     kind: str) -> None:
    msg = client.call(fail_code=grpc.StatusCode.PERMISSION_DENIED.value[0],
                      fail_message=f"no {kind}", trailers={"x-why": kind})
    r = {"unary": lambda: client.unary(msg), "client_stream": lambda: client.client_stream([msg]),
         "server_stream": lambda: client.server_stream(msg),
         "bidi": lambda: client.bidi([msg])}[kind]()
    assert (r.code, r.details, r.replies) == (grpc.StatusCode.PERMISSION_DENIED, f"no {kind}", [])
    assert ("x-why", kind) in r.trailing_metadata
    assert server.wait_calls(lambda c: c.outcome == "failed:PERMISSION_DENIED"
                             and c.method.endswith(
        {"unary": "Unary", "client_stream": "ClientStream", "server_stream": "ServerStream",
         "bidi": "Bidi"}[kind]))


def test_a_stream_can_fail_after_replies(client: GrpcTestClient) -> None:
    r = client.server_stream(count=3, fail_code=grpc.StatusCode.DATA_LOSS.value[0],
                             fail_message="cut")
    assert (r.code, len(r.replies)) == (grpc.StatusCode.DATA_LOSS, 3)


def test_a_hang_lasts_until_the_deadline_and_the_server_sees_it_end(server: GrpcTestServer,
                                                                    client: GrpcTestClient) -> None:
    started = time.monotonic()
    r = client.unary(hang=True, metadata=[("x-test", "hang")], timeout=0.5)
    assert r.code is grpc.StatusCode.DEADLINE_EXCEEDED and 0.4 < time.monotonic() - started < 5
    assert server.wait_calls(lambda c: c.header("x-test") == ["hang"])[0].outcome == "cancelled"


def test_a_long_stream_cancelled_by_the_client_ends_on_the_server(server: GrpcTestServer,
                                                                   client: GrpcTestClient) -> None:
    call = client.stub.ServerStream(client.call(count=100000, interval_ms=20),
                                    metadata=[("x-test", "long")], timeout=60)
    first = [next(call) for _ in range(3)]
    assert [r.index for r in first] == [0, 1, 2]
    call.cancel()
    rec = server.wait_calls(lambda c: c.header("x-test") == ["long"])[0]
    assert rec.outcome == "cancelled" and 3 <= rec.sent < 100


def test_delay(client: GrpcTestClient) -> None:
    started = time.monotonic()
    assert client.unary(delay_ms=300).ok
    assert time.monotonic() - started >= 0.29


def test_health_service_follows_set_serving() -> None:
    with GrpcTestServer("health") as s, GrpcTestClient(s.address) as c:
        assert c.check() == "SERVING" and c.check(SERVICE) == "SERVING"
        assert c.check("other.Service") == "NOT_FOUND"
        s.set_serving(False)
        assert c.check() == "NOT_SERVING" and c.check(SERVICE) == "NOT_SERVING"


def test_a_killed_server_ends_its_streams_unavailable(tmp_path: Path) -> None:
    """The subprocess server, killed mid-stream (a backend dying): the client's stream
    ends UNAVAILABLE, not hung; a new call is UNAVAILABLE too."""
    spawned = spawn_server(tmp_path / "grpcsvc.log", "doomed")
    try:
        with GrpcTestClient(spawned.address) as c:
            assert c.check() == "SERVING"
            call = c.stub.ServerStream(c.call(count=100000, interval_ms=20), timeout=30)
            assert next(call).server == "doomed"
            spawned.kill()
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                for _ in call:
                    pass
            assert (err.value.code() is grpc.StatusCode.UNAVAILABLE
                    and time.monotonic() - started < 5)
            assert c.unary(timeout=2).code is grpc.StatusCode.UNAVAILABLE
    finally:
        spawned.stop()


def test_tls_server(tmp_path: Path) -> None:
    from conformance.certs import self_signed

    pair = self_signed(["backend.example.com"])
    with GrpcTestServer("tls", tls=(pair.cert_pem, pair.key_pem)) as s:
        with GrpcTestClient(s.address, root_certificates=pair.cert_pem,
                            server_name="backend.example.com") as c:
            r = c.unary(payload=b"secret")
            assert (r.ok and r.reply.payload == b"secret"
                    and r.reply.authority == "backend.example.com")
        with GrpcTestClient(s.address) as plain:  # clear text to a TLS port fails
            assert plain.unary(timeout=2).code is grpc.StatusCode.UNAVAILABLE
