"""TrafficPolicy ``tracing``: its schema (bad values name the field), what it compiles to,
that only a Gateway's HTTP/HTTPS listeners take it (a route or a TCP listener target is
Invalid), and the worker's tracers built from it: one per distinct setting, one export
per distinct endpoint, the default where no policy says otherwise."""

from __future__ import annotations

import pytest

from controller.policy.tracing import compile_tracing
from controller.schema import apply_defaults, validate
from kgw_l7.config import SpanTag, TracingPolicy
from tests.policy.worlds import ancestors, base, ref, run, tp

EP = {"endpoint": "http://collector:4318"}


def errors(value: dict, target: str = "Gateway", name: str = "gw") -> list[tuple[str, str]]:
    obj = apply_defaults(tp("p", [ref(target, name)], tracing=value))
    return [(e.path, e.message) for e in validate(obj)]


@pytest.mark.parametrize("value,path,said", [
    ({}, "spec.tracing.provider", "required unless disabled is true"),
    ({"provider": {"endpoint": "collector:4318"}}, "spec.tracing.provider.endpoint",
     "must be an http:// or https:// URL"),
    ({"provider": {"endpoint": "http://c:99999"}}, "spec.tracing.provider.endpoint",
     "not a URL"),
    ({"provider": {"endpoint": "http://c:4318?x=1"}}, "spec.tracing.provider.endpoint",
     "query"),
    ({"provider": EP, "samplingRate": 101}, "spec.tracing.samplingRate",
     "less than or equal to 100"),
    ({"provider": EP, "samplingRate": 5, "samplingFraction": {"numerator": 1,
                                                               "denominator": 2}},
     "spec.tracing", "not both"),
    ({"provider": EP, "samplingFraction": {"numerator": 3, "denominator": 2}},
     "spec.tracing.samplingFraction", "must not exceed"),
    ({"provider": EP, "samplingFraction": {"numerator": 1, "denominator": 0}},
     "spec.tracing.samplingFraction.denominator", "greater than or equal to 1"),
    ({"provider": EP, "customTags": {"t": {"type": "RequestHeader"}}},
     "spec.tracing.customTags[t].requestHeader", "required when type is RequestHeader"),
    ({"provider": EP, "customTags": {"t": {"type": "Literal", "literal": {"value": "x"},
                                           "requestHeader": {"name": "x"}}}},
     "spec.tracing.customTags[t].requestHeader", "only allowed when type is RequestHeader"),
    ({"provider": EP, "customTags": {"t": {"type": "RequestHeader",
                                           "requestHeader": {"name": "X-Up"}}}},
     "spec.tracing.customTags[t].requestHeader.name", "a lower case header name"),
    ({"provider": EP, "customTags": {"t": {"type": "Environment"}}},
     "spec.tracing.customTags[t].type", "unsupported value"),
    ({"provider": EP, "serviceName": ""}, "spec.tracing.serviceName", "at least 1"),
    ({"provider": {**EP, "protocol": "http/json"}}, "spec.tracing.provider.protocol",
     "unsupported value"),
    ({"provider": {"endpoint": "http://c:4317/v1/traces", "protocol": "grpc"}},
     "spec.tracing.provider.endpoint", "with protocol grpc, the collector's address has no "
                                       "path"),
])
def test_bad_values_name_the_field(value: dict, path: str, said: str) -> None:
    got = errors(value)
    assert any(p == path and said in m for p, m in got), got


def test_good_values_pass() -> None:
    assert errors({"provider": EP, "samplingRate": 0, "serviceName": "edge",
                   "resourceAttributes": {"deployment.environment": "prod"},
                   "customTags": {"user.tier": {"type": "RequestHeader",
                                                "requestHeader": {"name": "x-tier",
                                                                  "defaultValue": "none"}},
                                  "team": {"type": "Literal", "literal": {"value": "a"}}}}) \
        == []
    assert errors({"disabled": True}) == []
    assert errors({"provider": {"endpoint": "https://c:4317/", "protocol": "grpc"}}) == []
    assert errors({"provider": {**EP, "protocol": "http/protobuf"}}) == []


def test_compiled_record() -> None:
    got = compile_tracing({"provider": {"endpoint": "http://c:4318/"},
                           "samplingFraction": {"numerator": 1, "denominator": 1000},
                           "serviceName": "edge",
                           "resourceAttributes": {"b": "2", "a": "1"},
                           "customTags": {"z": {"type": "Literal", "literal": {"value": "v"}},
                                          "y": {"type": "RequestHeader",
                                                "requestHeader": {"name": "x-y"}}}}, "s")
    assert got == TracingPolicy(False, "http://c:4318/v1/traces", 0.001, "edge",
                                (("a", "1"), ("b", "2")),
                                (SpanTag("y", "x-y", None), SpanTag("z", None, "v")))
    assert compile_tracing({"provider": {"endpoint": "https://c/otlp/v1/traces"}}, "s") == \
        TracingPolicy(endpoint="https://c/otlp/v1/traces", ratio=1.0)
    assert compile_tracing({"provider": EP, "samplingRate": 25}, "s").ratio == 0.25
    assert compile_tracing({"provider": {"endpoint": "http://c:4317", "protocol": "grpc"}},
                           "s") == TracingPolicy(endpoint="http://c:4317", protocol="grpc")
    assert compile_tracing({"disabled": True, "provider": EP}, "s") == \
        TracingPolicy(disabled=True)


def test_lands_on_the_listener_and_a_route_target_is_invalid() -> None:
    objs = base() + [
        tp("gw-trace", [ref("Gateway", "gw", "http")], tracing={"provider": EP}),
        tp("route-trace", [ref("HTTPRoute", "r")], tracing={"provider": EP}),
    ]
    t = run(objs)
    by_port = {lis.port: lis for lis in t.l7.listeners}
    assert by_port[80].policy is not None
    assert by_port[80].policy.tracing == TracingPolicy(endpoint="http://collector:4318/v1/traces")
    assert by_port[81].policy is None or by_port[81].policy.tracing is None
    reasons = [reason for _, reason, _ in ancestors(t, "route-trace")]
    assert reasons and set(reasons) == {"Invalid"}, ancestors(t, "route-trace")
    assert ancestors(t, "gw-trace") == [("Gateway/gw", "Accepted", "the policy applies")]


def test_a_tcp_listener_target_is_invalid() -> None:
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP"},
                 {"name": "tcp", "port": 9000, "protocol": "TCP"}]
    objs = base(listeners) + [tp("tcp-only", [ref("Gateway", "gw", "tcp")],
                                 tracing={"provider": EP}),
                              tp("whole", [ref("Gateway", "gw")], tracing={"provider": EP},
                                 created="2026-01-01T00:00:00Z")]
    t = run(objs)
    [(_, reason, msg)] = ancestors(t, "tcp-only")
    assert reason == "Invalid"
    assert "spec.tracing: not applied on listener(s) tcp" in msg
    [(_, reason, msg)] = ancestors(t, "whole")
    assert reason == "Accepted" and "not applied on listener(s) tcp" in msg


def test_worker_tracers_from_the_policies() -> None:
    from kgw_l7.config import Listener, ListenerPolicy
    from kgw_l7.context import WorkerContext
    from kgw_l7.tracing import Tracer

    ctx = WorkerContext.__new__(WorkerContext)
    default = Tracer("http://a:4318/v1/traces", "parentbased_always_on", 1.0, 2.0)
    ctx.tracer = default
    ctx._tracers = {}
    ctx._exports = {("http/protobuf", default.endpoint): default.export}

    def lis(policy: TracingPolicy | None) -> Listener:
        return Listener("l", "127.0.0.1", 1, policy=ListenerPolicy(tracing=policy))

    same_ep = TracingPolicy(endpoint="http://a:4318/v1/traces", ratio=0.5, service_name="x")
    other_ep = TracingPolicy(endpoint="http://b:4318/v1/traces", ratio=0.01,
                             resource=(("k", "v"),), tags=(SpanTag("t", "x-t", "d"),))
    try:
        assert ctx.listener_tracer(Listener("l", "127.0.0.1", 1)) is default
        assert ctx.listener_tracer(lis(None)) is default
        assert ctx.listener_tracer(lis(TracingPolicy(disabled=True))) is None
        t1 = ctx.listener_tracer(lis(same_ep))
        assert t1 is not None and t1 is not default and t1.export is default.export
        assert (t1.ratio, t1.sampler, t1._resource.attributes["service.name"]) == \
            (0.5, "parentbased_traceidratio", "x")
        assert ctx.listener_tracer(lis(same_ep)) is t1  # one per distinct setting
        t2 = ctx.listener_tracer(lis(other_ep))
        assert t2 is not None and t2.export is not default.export
        assert t2.export.timeout == 2.0  # (the command line's exporter timeout)
        assert t2._resource.attributes["k"] == "v"
        assert set(ctx._exports) == {("http/protobuf", "http://a:4318/v1/traces"),
                                     ("http/protobuf", "http://b:4318/v1/traces")}
        # The same address over gRPC: an export of its own, with the gRPC exporter.
        t3 = ctx.listener_tracer(lis(TracingPolicy(endpoint="http://a:4318", protocol="grpc")))
        assert t3 is not None and t3.export is not default.export
        assert t3.export.protocol == "grpc" and ("grpc", "http://a:4318") in ctx._exports
        assert type(t3.export._exporter).__module__.endswith("proto.grpc.trace_exporter")
        tr = t2.begin(((b"x-t", b"gold"),))
        assert tr.tracer is t2
        assert t2._tag_values(((b"x-t", b"gold"),)) == {"t": "gold"}
        assert t2._tag_values(()) == {"t": "d"}
    finally:
        for export in ctx._exports.values():
            export.close(0.0)
