"""`kgw run -c DIR` with every default serving GRPCRoutes to real grpcio servers
(tests/grpcsvc.py): the four call types, a 16 MiB message, a call cancelled by its
client, a backend killed mid-stream, weights, a header match, header modifiers and a
mirror, the errors kgw itself gives gRPC clients (no route UNIMPLEMENTED, backend down
UNAVAILABLE, grpc-timeout DEADLINE_EXCEEDED), and a silent stream that outlives the
default response timeout.

grpcio runs its own threads, which would not join the test host's network namespace
(``Host.call`` moves one thread): the client side runs in a process started in the host
(``client_side``, ``python -m tests.test_run_grpc``), which also runs the backends, and
reports with its exit status.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
#: Service -> (endpoint port, ready)
BACKENDS = {"a": (9301, True), "b": (9302, True), "victim": (9303, True), "down": (9309, True),
            "unready": (9308, False)}
CONF = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: kgw
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: kgw.test.grpcsvc.Test}, headers: [{name: x-pick, value: b}]}]
    backendRefs: [{name: b, port: 80}]
  - matches: [{method: {service: kgw.test.grpcsvc.Test}}]
    backendRefs: [{name: a, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: weights, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [weights.example.com]
  rules: [{backendRefs: [{name: a, port: 80, weight: 3}, {name: b, port: 80, weight: 1}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: filters, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [filters.example.com]
  rules:
  - filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-set, value: by-kgw}]}}
    - {type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-resp, value: by-kgw}]}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: b, port: 80}}}
    backendRefs: [{name: a, port: 80}]
---
# gRPC through an HTTPRoute with a request timeout (GRPCRoute has none): the shorter of
# it and the call's grpc-timeout applies.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: capped, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [capped.example.com]
  rules: [{timeouts: {request: 500ms}, backendRefs: [{name: a-h2c, port: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: a-h2c, namespace: app}
spec: {ports: [{name: grpc, port: 80, appProtocol: kubernetes.io/h2c}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: a-h2c, namespace: app, labels: {kubernetes.io/service-name: a-h2c}}
addressType: IPv4
ports: [{name: grpc, port: 9301}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: others, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: [others.example.com]
  rules:
  - matches: [{headers: [{name: x-to, value: victim}]}]
    backendRefs: [{name: victim, port: 80}]
  - matches: [{headers: [{name: x-to, value: down}]}]
    backendRefs: [{name: down, port: 80}]
  - matches: [{headers: [{name: x-to, value: unready}]}]
    backendRefs: [{name: unready, port: 80}]
"""
# No appProtocol: a GRPCRoute's backends are h2c by default.
SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: app}}
spec: {{ports: [{{name: grpc, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-a, namespace: app, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: {ready}}}}}]
"""


def test_grpc_through_kgw_run(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gateway.yaml").write_text(CONF + "".join(
        SERVICE.format(name=n, port=p, ready=str(r).lower()) for n, (p, r) in BACKENDS.items()))
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=open(tmp_path / "kgw.log", "wb"),
               stderr=subprocess.STDOUT)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    client = host.popen([sys.executable, "-m", "tests.test_run_grpc", str(tmp_path)],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = client.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        client.kill()
        out, _ = client.communicate()
    log = (tmp_path / "kgw.log").read_text(errors="replace")
    assert client.returncode == 0, out.decode(errors="replace") + "\n--- kgw:\n" + log[-4000:]
    # the worker lived through the backend killed mid-stream
    assert "exited; restarting" not in log and "Traceback" not in log, log[-4000:]


# -- the client side (in the host) ----------------------------------------------------------

def _raw_call(authority: bytes, path: bytes, headers: list[tuple[bytes, bytes]],
              body: bytes) -> tuple[float, dict[bytes, bytes], list]:
    """One gRPC request with the ``h2`` library (grpcio will not send a grpc-timeout of the
    caller's choosing without also enforcing it itself): (seconds until the response
    ended, its header fields, its events)."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock = socket.create_connection(("127.0.0.1", 8080), timeout=10)
    t0 = time.monotonic()
    try:
        conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"),
                              (b":authority", authority), (b":path", path),
                              (b"content-type", b"application/grpc"), (b"te", b"trailers"),
                              *headers])
        conn.send_data(1, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        fields: dict[bytes, bytes] = {}
        events: list = []
        while True:
            data = sock.recv(65536)
            assert data, "kgw closed the connection"
            for ev in conn.receive_data(data):
                events.append(ev)
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    fields.update(dict(ev.headers))
                if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return time.monotonic() - t0, fields, events
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()


def _frame(msg: bytes) -> bytes:
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def client_side(tmp: Path) -> None:
    import grpc

    from tests.grpcsvc import SERVICE as SVC
    from tests.grpcsvc import GrpcTestClient, GrpcTestServer, pattern, spawn_server

    Code = grpc.StatusCode
    a = GrpcTestServer("a", port=BACKENDS["a"][0]).start()
    b = GrpcTestServer("b", port=BACKENDS["b"][0]).start()
    victim = spawn_server(tmp / "victim.log", "victim", port=BACKENDS["victim"][0])
    gw = "127.0.0.1:8080"
    c = GrpcTestClient(gw, authority="grpc.example.com")
    try:
        r = eventually(lambda: (r := c.unary(payload=b"hi")).ok and r, timeout=20)
        # unary, through the rule without a header match: backend a, :authority kept
        assert r.reply.payload == b"hi" and r.reply.server == "a"
        assert r.reply.authority == "grpc.example.com"
        assert ("x-forwarded-proto", "http") in [(m.key, m.value) for m in r.reply.metadata]
        # the header match picks b
        assert c.unary(payload=b"x", metadata=[("x-pick", "b")]).reply.server == "b"
        # client streaming: every message arrives, in order (the server hashes them)
        import hashlib

        parts = [bytes([i]) * (1000 * i + 1) for i in range(1, 6)]
        r = c.client_stream(c.call(payload=p) for p in parts)
        assert r.ok and r.reply.received == 5
        assert r.reply.sha256 == hashlib.sha256(b"".join(parts)).hexdigest()
        # server streaming, with trailing metadata relayed exactly
        r = c.server_stream(count=20, response_size=1000, trailers={"x-done": "yes"})
        assert r.ok and [m.index for m in r.replies] == list(range(20)), r
        assert all(m.payload == pattern(1000) for m in r.replies)
        assert ("x-done", "yes") in r.trailing_metadata
        # bidi: a reply per message, as they go
        r = c.bidi(c.call(payload=bytes([i]) * 10) for i in range(5))
        assert r.ok and [m.payload for m in r.replies] == [bytes([i]) * 10 for i in range(5)]
        # a backend's own status and message reach the client exactly
        r = c.unary(fail_code=Code.FAILED_PRECONDITION.value[0], fail_message="nope: ü%")
        assert (r.code, r.details) == (Code.FAILED_PRECONDITION, "nope: ü%"), r
        # 16 MiB both ways
        big = pattern(16 << 20)
        r = c.unary(payload=big, timeout=60)
        assert r.ok and r.reply.payload == big and r.reply.received_bytes == len(big)

        # cancelled by the client: the backend sees its call cancelled
        call = c.stub.ServerStream(c.call(count=1000, interval_ms=50), timeout=30)
        it = iter(call)
        next(it), next(it)
        call.cancel()
        a.wait_calls(lambda rec: rec.method == f"/{SVC}/ServerStream"
                     and rec.outcome == "cancelled", timeout=10)

        # a silent stream outlives the default response timeout (15 s): nothing for 17 s,
        # then its second message (in a thread, while the rest goes on)
        silent: dict = {}
        t = threading.Thread(target=lambda: silent.update(
            r=c.server_stream(count=2, interval_ms=17000, timeout=60)))
        t.start()

        # weights 3:1
        w = GrpcTestClient(gw, authority="weights.example.com")
        servers = [w.unary(payload=b"w").reply.server for _ in range(200)]
        assert 0.6 < servers.count("a") / 200 < 0.9, servers.count("a")
        assert servers.count("a") + servers.count("b") == 200

        # header modifiers both ways, and a mirror (its answer dropped)
        f = GrpcTestClient(gw, authority="filters.example.com")
        r = f.unary(payload=b"m", metadata=[("x-mirror-check", "1")])
        assert r.ok and r.reply.server == "a"
        assert ("x-set", "by-kgw") in [(m.key, m.value) for m in r.reply.metadata]
        assert ("x-resp", "by-kgw") in r.initial_metadata, r.initial_metadata
        (mirrored,) = b.wait_calls(lambda rec: rec.header("x-mirror-check") == ["1"])
        assert mirrored.method == f"/{SVC}/Unary" and mirrored.outcome == "ok"
        assert mirrored.received_bytes == 1

        # errors kgw gives gRPC clients
        nohost = GrpcTestClient(gw, authority="nothing.example.com")
        r = nohost.unary(payload=b"x")
        assert r.code == Code.UNIMPLEMENTED, r  # no route (no virtual host)
        assert c.check() == "UNIMPLEMENTED"  # no route: the health service is not routed
        o = GrpcTestClient(gw, authority="others.example.com")
        r = o.unary(payload=b"x", metadata=[("x-to", "down")])
        assert r.code == Code.UNAVAILABLE and r.details == "upstream connect error", r
        r = o.unary(payload=b"x", metadata=[("x-to", "unready")])
        assert r.code == Code.UNAVAILABLE and r.details == "no healthy upstream", r
        # grpc-timeout is the call's deadline at the gateway: 200 + grpc-status 4
        took, fields, _ = _raw_call(b"grpc.example.com", f"/{SVC}/Unary".encode(),
                                    [(b"grpc-timeout", b"300m")],
                                    _frame(c.call(delay_ms=5000).SerializeToString()))
        assert fields[b":status"] == b"200" and fields[b"grpc-status"] == b"4", fields
        assert fields[b"grpc-message"] == b"upstream request timeout" and took < 3, (took, fields)
        # ... capped by the route's request timeout (500ms) when that is shorter
        took, fields, _ = _raw_call(b"capped.example.com", f"/{SVC}/Unary".encode(),
                                    [(b"grpc-timeout", b"20S")],
                                    _frame(c.call(delay_ms=5000).SerializeToString()))
        assert fields[b"grpc-status"] == b"4" and took < 3, (took, fields)
        # no route on a known host: trailers-only UNIMPLEMENTED
        _, fields, _ = _raw_call(b"grpc.example.com", b"/nope.Service/Call", [], _frame(b""))
        assert (fields[b":status"], fields[b"grpc-status"]) == (b"200", b"12"), fields

        # a backend killed mid-stream: the client gets an error, kgw goes on
        v = GrpcTestClient(gw, authority="others.example.com")
        call = v.stub.ServerStream(v.call(count=1000, interval_ms=50),
                                   metadata=(("x-to", "victim"),), timeout=30)
        it = iter(call)
        next(it), next(it)
        victim.kill()
        try:
            for _ in it:
                pass
            raise AssertionError("the stream went on after its backend was killed")
        except grpc.RpcError as exc:
            assert exc.code() in (Code.UNAVAILABLE, Code.INTERNAL), exc
        assert c.unary(payload=b"after").ok

        t.join(60)
        r = silent["r"]
        assert r.ok and len(r.replies) == 2, r
        print("ok")
    finally:
        victim.stop()
        a.stop(0)
        b.stop(0)


if __name__ == "__main__":
    client_side(Path(sys.argv[1]))
