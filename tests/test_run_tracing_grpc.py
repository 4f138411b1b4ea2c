"""Tracing over OTLP/gRPC through a real ``kgw run``: spans received by a real gRPC OTLP
receiver (grpcio with opentelemetry-proto's TraceService, tests/otlp_receiver.py).

``kgw run -c DIR`` with nothing but the standard environment (OTEL_EXPORTER_OTLP_ENDPOINT
and OTEL_EXPORTER_OTLP_PROTOCOL=grpc), or nothing but a Gateway's TrafficPolicy
(``provider.protocol: grpc``). A collector that is down, refuses or hangs:
tests/test_run_tracing.py, for both protocols."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv
from tests.otlp_receiver import GrpcReceiver
from tests.test_run_tracing import ADMIN, CLIENT, SERVER, get, one, received, write_conf

pytestmark = pytest.mark.slow

POLICY = """\
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: gw-tracing, namespace: app}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  tracing:
    provider: {endpoint: "http://127.0.0.1:4317", protocol: grpc}
    serviceName: edge-grpc
"""


def spans_of(rx: GrpcReceiver, trace_id: str, n: int) -> list:
    return eventually(lambda: len(s := rx.trace(trace_id)) >= n and s, timeout=15)


def test_spans_over_grpc_with_only_the_environment(host: Host, tmp_path: Path) -> None:
    rx = host.call(lambda: GrpcReceiver(("127.0.0.1", 4317))).start()
    try:
        host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
        conf = write_conf(tmp_path / "conf", 8080, 9101)
        host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL,
                   env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        eventually(lambda: host.call(get, 8080, "/warm")[0] == 200)

        status, echoed = host.call(get, 8080, "/hello?x=1")
        assert status == 200
        trace_id, parent, flags = received(echoed)
        assert flags == "01"
        spans = spans_of(rx, trace_id, 2)
        server, client = one(spans, SERVER), one(spans, CLIENT)
        assert server.parent == "" and client.parent == server.span_id
        assert client.span_id == parent and server.service == "kgw"
        assert server.attrs["url.path"] == "/hello"
        assert server.attrs["http.response.status_code"] == 200
        assert client.attrs["server.port"] == 9101

        # An incoming context is followed over gRPC as over HTTP.
        tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        status, echoed = host.call(get, 8080, "/in", {"traceparent": f"00-{tid}-{pid}-01"})
        assert received(echoed)[0] == tid
        assert one(spans_of(rx, tid, 2), SERVER).parent == pid
        assert all(m.get("content-type", "application/grpc").startswith("application/grpc")
                   for m in rx.metadata)
        metrics = host.call(http_get, f"{ADMIN}/metrics")[1].decode()
        assert re.search(r"^kgw_tracing_spans_exported_total [1-9]", metrics, re.M), metrics
    finally:
        rx.close()


def test_a_gateway_policy_exports_over_grpc(host: Host, tmp_path: Path) -> None:
    rx = host.call(lambda: GrpcReceiver(("127.0.0.1", 4317))).start()
    try:
        host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
        conf = write_conf(tmp_path / "conf", 8080, 9101)
        (conf / "policy.yaml").write_text(POLICY)
        host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        eventually(lambda: host.call(get, 8080, "/warm")[0] == 200)
        status, echoed = host.call(get, 8080, "/policy")
        assert status == 200
        trace_id, parent, flags = received(echoed)
        assert flags == "01"
        spans = spans_of(rx, trace_id, 2)
        server = one(spans, SERVER)
        assert server.service == "edge-grpc" and one(spans, CLIENT).span_id == parent
    finally:
        rx.close()
