"""Tracing through a real ``kgw run``: spans received by a real OTLP/HTTP receiver
(tests/otlp_receiver.py), W3C trace context as the echo backend received it.

``kgw run -c DIR --tracing-endpoint URL`` and nothing else (the defaults); the second
hop of the two-kgw test is configured by OTEL_EXPORTER_OTLP_ENDPOINT alone."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, free_port, http_get, kgw_cmd, running
from tests.netns import Host, kgw_argv
from tests.otlp_receiver import GrpcReceiver, Receiver, Span

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
SERVER, CLIENT = 2, 3

CONF = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: app}}
spec:
  gatewayClassName: kgw
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners: [{{name: http, protocol: HTTP, port: {listen}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: app}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-a, namespace: app, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: http, port: {backend}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: app}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [shop.example.com]
  rules:
  - backendRefs: [{{name: echo, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /retry}}}}]
    retry: {{codes: [503], attempts: 2}}
    backendRefs: [{{name: echo, port: 80}}]
"""
TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers={"Host": "shop.example.com", **(headers or {})})
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if r.status == 200 else {}
    finally:
        c.close()


def received(echoed: dict) -> tuple[str, str, str]:
    """(trace id, parent id, flags) of the traceparent the backend received (exactly one)."""
    values = echoed["headers"]["Traceparent"]
    assert len(values) == 1, values
    m = TP.match(values[0])
    assert m, values
    return m.group(1), m.group(2), m.group(3)


def spans_of(rx: Receiver, trace_id: str, n: int) -> list[Span]:
    return eventually(lambda: len(s := rx.trace(trace_id)) >= n and s, timeout=15)


def one(spans: list[Span], kind: int) -> Span:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, spans
    return found[0]


def collector(host: Host, port: int = 4318, mode: str = "ok") -> Receiver:
    return host.call(lambda: Receiver(("127.0.0.1", port), mode)).start()


def write_conf(path: Path, listen: int, backend: int) -> Path:
    path.mkdir()
    (path / "gw.yaml").write_text(CONF.format(listen=listen, backend=backend))
    return path


def test_spans_and_trace_context_with_only_the_tracing_flag(host: Host, tmp_path: Path) -> None:
    rx = collector(host)
    try:
        host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
        conf = write_conf(tmp_path / "conf", 8080, 9101)
        host.popen(kgw_argv("run", "-c", str(conf), "--tracing-endpoint",
                            "http://127.0.0.1:4318"), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        eventually(lambda: host.call(get, 8080, "/warm")[0] == 200)

        # No incoming context: a new sampled trace; the backend's parent is the client span.
        status, echoed = host.call(get, 8080, "/hello?x=1")
        assert status == 200
        trace_id, parent, flags = received(echoed)
        assert flags == "01"
        spans = spans_of(rx, trace_id, 2)
        server, client = one(spans, SERVER), one(spans, CLIENT)
        assert server.parent == "" and client.parent == server.span_id
        assert client.span_id == parent
        a = server.attrs
        assert server.service == "kgw" and server.name == "GET " + a["http.route"]
        assert a["http.request.method"] == "GET" and a["url.path"] == "/hello"
        assert a["http.response.status_code"] == 200 and a["url.scheme"] == "http"
        assert a["http.route"].startswith("app/shop"), a
        assert a["client.address"] == "127.0.0.1" and a["server.address"] == "shop.example.com"
        assert a["network.protocol.version"] == "1.1" and "error.type" not in a
        c = client.attrs
        assert (c["server.address"], c["server.port"], c["http.response.status_code"]) == \
            ("127.0.0.1", 9101, 200)
        assert server.start <= client.start <= client.end <= server.end

        # An incoming sampled context: same trace, the client's span is the parent;
        # tracestate goes on to the backend.
        tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        status, echoed = host.call(get, 8080, "/in", {
            "traceparent": f"00-{tid}-{pid}-01", "tracestate": "vendor=abc"})
        got_tid, got_parent, flags = received(echoed)
        assert (got_tid, flags) == (tid, "01") and got_parent != pid
        assert echoed["headers"]["Tracestate"] == ["vendor=abc"]
        spans = spans_of(rx, tid, 2)
        assert one(spans, SERVER).parent == pid
        assert one(spans, CLIENT).span_id == got_parent

        # sampled=0 is respected: propagated unsampled, no span exported.
        tid0 = "0af7651916cd43dd8448eb211c80319c"
        status, echoed = host.call(get, 8080, "/unsampled", {
            "traceparent": f"00-{tid0}-b7ad6b7169203331-00"})
        assert status == 200 and received(echoed)[0] == tid0 and received(echoed)[2] == "00"

        # A malformed traceparent is ignored (and its tracestate): a new trace.
        status, echoed = host.call(get, 8080, "/bad", {
            "traceparent": f"00-{tid.upper()}-{pid}-01", "tracestate": "vendor=bad"})
        new_tid, _, flags = received(echoed)
        assert new_tid != tid.upper().lower() and flags == "01"
        assert "Tracestate" not in echoed["headers"]
        assert one(spans_of(rx, new_tid, 2), SERVER).parent == ""

        # A retry: an event of the server span, a client span per try, each its own id.
        status, echoed = host.call(get, 8080, "/retry?uuid=t1&succeedAfter=1&responseCode=503")
        assert status == 200
        rtid, rparent, _ = received(echoed)
        spans = spans_of(rx, rtid, 3)
        server = one(spans, SERVER)
        tries = sorted((s for s in spans if s.kind == CLIENT), key=lambda s: s.start)
        assert [t.attrs["http.response.status_code"] for t in tries] == [503, 200]
        assert all(t.parent == server.span_id for t in tries) and tries[1].span_id == rparent
        assert tries[1].attrs["http.request.resend_count"] == 1
        assert tries[0].attrs["error.type"] == "503"
        assert [e[0] for e in server.events] == ["retry"]
        # (the route's other rule)
        first_route = one(spans_of(rx, trace_id, 2), SERVER).attrs["http.route"]
        assert server.attrs["http.route"].startswith("app/shop")
        assert server.attrs["http.route"] != first_route

        time.sleep(1.5)  # (the export thread's next tick: the unsampled trace would be in)
        assert rx.trace(tid0) == []
        metrics = host.call(http_get, f"{ADMIN}/metrics")[1].decode()
        assert re.search(r"^kgw_tracing_spans_exported_total [1-9]", metrics, re.M), metrics
    finally:
        rx.close()


def test_two_kgw_hops_one_trace(host: Host, tmp_path: Path) -> None:
    """kgw (flag) -> kgw (OTEL_EXPORTER_OTLP_ENDPOINT only) -> echo: one trace id, each
    server span's parent the previous hop's client span."""
    rx = collector(host)
    try:
        host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
        first = write_conf(tmp_path / "first", 8080, 8081)
        second = write_conf(tmp_path / "second", 8081, 9101)
        host.popen(kgw_argv("run", "-c", str(first), "--tracing-endpoint",
                            "http://127.0.0.1:4318"), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
        host.popen(kgw_argv("run", "-c", str(second), "--admin-address", "127.0.0.1:9096"),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                        "OTEL_SERVICE_NAME": "kgw-inner"})
        eventually(lambda: host.call(get, 8080, "/warm")[0] == 200, timeout=30)
        status, echoed = host.call(get, 8080, "/two")
        assert status == 200
        trace_id, parent, _ = received(echoed)
        spans = spans_of(rx, trace_id, 4)
        outer = [s for s in spans if s.service == "kgw"]
        inner = [s for s in spans if s.service == "kgw-inner"]
        s1, c1 = one(outer, SERVER), one(outer, CLIENT)
        s2, c2 = one(inner, SERVER), one(inner, CLIENT)
        assert s1.parent == "" and c1.parent == s1.span_id
        assert s2.parent == c1.span_id and c2.parent == s2.span_id
        assert c2.span_id == parent
        assert c1.attrs["server.port"] == 8081 and c2.attrs["server.port"] == 9101
    finally:
        rx.close()


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("mode", ["down", "fail", "hang"])
def test_a_broken_collector_never_slows_requests(tmp_path: Path, mode: str,
                                                 protocol: str) -> None:
    """Nothing listening, an error to every export (HTTP 500, gRPC INTERNAL), or no
    answer: every request is served as fast as without tracing, the failure is said once,
    the lost spans are counted. Over OTLP/HTTP (``--tracing-endpoint``) and OTLP/gRPC
    (nothing but the standard environment)."""
    port, admin, otlp, backend = free_port(), f"127.0.0.1:{free_port()}", free_port(), free_port()
    kind = GrpcReceiver if protocol == "grpc" else Receiver
    rx = None if mode == "down" else kind(("127.0.0.1", otlp), mode).start()
    conf = write_conf(tmp_path / "conf", port, backend)
    cmd = kgw_cmd("run", "-c", str(conf), "--admin-address", admin, "--workers", "1",
                  "--l4-mode", "userspace", "--drain-delay", "0")
    env = {"OTEL_EXPORTER_OTLP_TIMEOUT": "1000"}
    if protocol == "grpc":
        env.update(OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
                   OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp}")
    else:
        cmd += ["--tracing-endpoint", f"http://127.0.0.1:{otlp}"]
    try:
        with running(kgw_cmd("echo", "--port", str(backend)), stdout=subprocess.DEVNULL), \
                running(cmd, env=env, stderr=subprocess.PIPE, text=True) as proc:
            eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200, timeout=30)
            eventually(lambda: get(port, "/warm")[0] == 200)
            worst = 0.0
            deadline = time.monotonic() + 4.0  # several export ticks, each failing
            n = 0
            while time.monotonic() < deadline:
                t = time.monotonic()
                assert get(port, "/r%d" % n)[0] == 200
                worst = max(worst, time.monotonic() - t)
                n += 1
            assert worst < 0.9, worst  # (an export attempt takes 1 s: never on a request)

            def dropped() -> float:
                text = http_get(f"http://{admin}/metrics")[1].decode()
                m = re.search(r'^kgw_tracing_spans_dropped_total\{reason="export_failed"\} '
                              r'(\S+)', text, re.M)
                return float(m.group(1)) if m else 0.0
            assert eventually(lambda: dropped() > 0, timeout=15)
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        said = [line for line in err.splitlines() if "tracing: export to" in line]
        assert len(said) == 1, err[-3000:]
        if rx is not None:
            assert rx.requests >= 1
    finally:
        if rx is not None:
            rx.close()


def test_bad_sampler_setting_is_refused_at_start(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", free_port(), free_port())
    cmd = kgw_cmd("run", "-c", str(conf), "--admin-address", f"127.0.0.1:{free_port()}",
                  "--l4-mode", "userspace")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={
        **os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_TRACES_SAMPLER": "sometimes"}, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode != 0
    assert "OTEL_TRACES_SAMPLER='sometimes'" in out.stderr, out.stderr[-2000:]
