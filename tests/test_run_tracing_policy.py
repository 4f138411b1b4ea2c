"""Tracing per Gateway (TrafficPolicy ``tracing``) through ``kgw run -c DIR`` with no
optional flag (so no command-line tracing): two Gateways, each with its own policy and
its own real OTLP/HTTP receiver (tests/otlp_receiver.py), and a third Gateway with no
policy, which traces nothing. Each Gateway's spans land at its collector with its service
name, resource attributes, custom tags and sampling; a policy edit takes effect live."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, http_get
from tests.netns import Host, kgw_argv
from tests.otlp_receiver import Receiver, Span

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
SERVER, CLIENT = 2, 3

CONF = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: app}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-a, namespace: app, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: http, port: 9101}]
endpoints: [{addresses: [127.0.0.1], conditions: {ready: true}}]
"""
GATEWAY = """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: app}}
spec:
  gatewayClassName: kgw
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}-route, namespace: app}}
spec:
  parentRefs: [{{name: {name}}}]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
"""
POLICIES = """\
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: shop-tracing, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: shop}}]
  tracing:
    provider: {{endpoint: "http://127.0.0.1:4318"}}
    samplingRate: 100
    serviceName: {shop_service}
    resourceAttributes: {{deployment.environment: prod}}
    customTags:
      user.tier: {{type: RequestHeader, requestHeader: {{name: x-tier, defaultValue: none}}}}
      team: {{type: Literal, literal: {{value: checkout}}}}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: admin-tracing, namespace: app}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: admin}}]
  tracing:
    provider: {{endpoint: "http://127.0.0.1:4319/v1/traces"}}
    samplingRate: 0
    serviceName: admin-edge
"""
TP = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if r.status == 200 else {}
    finally:
        c.close()


def traceparent(echoed: dict) -> tuple[str, str, str] | None:
    """(trace id, parent id, flags) of the traceparent the backend received, if any."""
    values = echoed["headers"].get("Traceparent")
    if values is None:
        return None
    assert len(values) == 1, values
    m = TP.match(values[0])
    assert m, values
    return m.group(1), m.group(2), m.group(3)


def spans_of(rx: Receiver, trace_id: str, n: int) -> list[Span]:
    return eventually(lambda: len(s := rx.trace(trace_id)) >= n and s, timeout=15)


def server_span(spans: list[Span]) -> Span:
    found = [s for s in spans if s.kind == SERVER]
    assert len(found) == 1, spans
    return found[0]


def write(conf: Path, shop_service: str) -> None:
    (conf / "gw.yaml").write_text(
        CONF + GATEWAY.format(name="shop", port=8081) + GATEWAY.format(name="admin", port=8082)
        + GATEWAY.format(name="plain", port=8083) + POLICIES.format(shop_service=shop_service))


def test_each_gateway_traces_as_its_policy_says(host: Host, tmp_path: Path) -> None:
    shop_rx = host.call(lambda: Receiver(("127.0.0.1", 4318))).start()
    admin_rx = host.call(lambda: Receiver(("127.0.0.1", 4319))).start()
    try:
        host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
        conf = tmp_path / "conf"
        conf.mkdir()
        write(conf, "shop-edge")
        host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
                   stderr=(tmp_path / "stderr").open("w"))
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        for port in (8081, 8082, 8083):
            eventually(lambda port=port: host.call(get, port, "/warm")[0] == 200)

        # shop: every new trace sampled, to 4318, under its service name, with its tags.
        status, echoed = host.call(get, 8081, "/buy", {"x-tier": "gold"})
        assert status == 200
        got = traceparent(echoed)
        assert got is not None and got[2] == "01"
        spans = spans_of(shop_rx, got[0], 2)
        server = server_span(spans)
        assert {s.service for s in spans} == {"shop-edge"}
        assert server.attrs["user.tier"] == "gold" and server.attrs["team"] == "checkout"
        assert server.attrs["url.path"] == "/buy"
        [client] = [s for s in spans if s.kind == CLIENT]
        assert client.parent == server.span_id and client.span_id == got[1]
        status, echoed = host.call(get, 8081, "/browse")
        got = traceparent(echoed)
        assert got is not None
        assert server_span(spans_of(shop_rx, got[0], 2)).attrs["user.tier"] == "none"

        # admin: samplingRate 0 -- its new traces are propagated unsampled, none exported;
        # a client's sampled context is followed (parent-based), to 4319 only.
        status, echoed = host.call(get, 8082, "/unsampled")
        unsampled = traceparent(echoed)
        assert unsampled is not None and unsampled[2] == "00"
        tid, pid = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        status, echoed = host.call(get, 8082, "/followed",
                                   {"traceparent": f"00-{tid}-{pid}-01"})
        got = traceparent(echoed)
        assert got is not None and got[0] == tid and got[2] == "01"
        spans = spans_of(admin_rx, tid, 2)
        assert {s.service for s in spans} == {"admin-edge"}
        assert server_span(spans).parent == pid
        assert "user.tier" not in server_span(spans).attrs

        # plain: no policy and no --tracing-endpoint: no trace context, no span.
        status, echoed = host.call(get, 8083, "/plain")
        assert status == 200 and traceparent(echoed) is None

        time.sleep(1.5)  # (the export threads' next tick: a wrongly sampled span would be in)
        assert admin_rx.trace(unsampled[0]) == []
        assert shop_rx.trace(tid) == [] and not any(s.service == "admin-edge"
                                                    for s in shop_rx.spans)
        assert not any(s.attrs.get("url.path") == "/plain"
                       for s in shop_rx.spans + admin_rx.spans)

        # An edit of the shop policy's service name takes effect without a restart.
        write(conf, "shop-edge-v2")

        def renamed() -> bool:
            _, echoed = host.call(get, 8081, "/again")
            got = traceparent(echoed)
            assert got is not None
            time.sleep(1.2)
            return any(s.service == "shop-edge-v2" for s in shop_rx.trace(got[0]))
        eventually(renamed, timeout=30)
    finally:
        shop_rx.close()
        admin_rx.close()
