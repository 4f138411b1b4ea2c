"""Tracing over OTLP/gRPC through a real ``kgw run``: spans received by a real gRPC OTLP
receiver (grpcio with opentelemetry-proto's TraceService, tests/otlp_receiver.py).

``kgw run -c DIR`` with nothing but the standard environment (OTEL_EXPORTER_OTLP_ENDPOINT
and OTEL_EXPORTER_OTLP_PROTOCOL=grpc), or nothing but a Gateway's TrafficPolicy
(``provider.protocol: grpc``); a collector that is down, refuses or hangs never slows a
request."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, free_port, http_get, kgw_cmd, running
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


@pytest.mark.parametrize("mode", ["down", "fail", "hang"])
def test_a_broken_grpc_collector_never_slows_requests(tmp_path: Path, mode: str) -> None:
    """Nothing listening, INTERNAL to every export, or no answer: every request is served
    as fast as without tracing, the failure is said once, the lost spans are counted."""
    port, admin, otlp, backend = free_port(), f"127.0.0.1:{free_port()}", free_port(), free_port()
    rx = None if mode == "down" else GrpcReceiver(("127.0.0.1", otlp), mode).start()
    conf = write_conf(tmp_path / "conf", port, backend)
    cmd = kgw_cmd("run", "-c", str(conf), "--admin-address", admin, "--workers", "1",
                  "--l4-mode", "userspace", "--drain-delay", "0")
    env = {"OTEL_EXPORTER_OTLP_TIMEOUT": "1000", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp}"}
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
            assert worst < 0.5, worst  # (an export attempt takes 1 s: never on a request)

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
