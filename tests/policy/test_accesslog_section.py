"""TrafficPolicy ``accessLog``: its schema (a bad format names the operator and where),
what it compiles to, that only a Gateway or listener can set it, and the worker's
settings built from it."""

from __future__ import annotations

import pytest

from controller.policy.accesslog import compile_access_log
from controller.schema import apply_defaults, validate
from kgw_l7.config import AccessLogPolicy
from tests.policy.worlds import ancestors, base, ref, run, tp


def errors(value: dict, target: str = "Gateway", name: str = "gw") -> list[tuple[str, str]]:
    obj = apply_defaults(tp("p", [ref(target, name)], accessLog=value))
    return [(e.path, e.message) for e in validate(obj)]


@pytest.mark.parametrize("value,said", [
    ({}, "must set disabled, format, filter or samplePercent"),
    ({"format": "text:%NOPE%"}, "unknown operator %NOPE% at position 5"),
    ({"format": "yaml"}, "expected 'json', 'text' or 'text:TEMPLATE'"),
    ({"filter": "warnings"}, "unsupported value"),
    ({"samplePercent": 0}, "greater than or equal to 1"),
    ({"samplePercent": 101}, "less than or equal to 100"),
])
def test_bad_values_name_the_field(value: dict, said: str) -> None:
    got = errors(value)
    assert any(p.startswith("spec.accessLog") and said in m for p, m in got), got


def test_compiled_record() -> None:
    assert compile_access_log({"format": "text", "filter": "errors", "samplePercent": 25},
                              "s") == AccessLogPolicy(False, "text", 400, 0.25)
    assert compile_access_log({"disabled": True}, "s") == AccessLogPolicy(True, None, None, None)


def test_lands_on_the_listener_and_a_route_target_is_invalid() -> None:
    objs = base() + [
        tp("gw-log", [ref("Gateway", "gw", "http")], accessLog={"filter": "server-errors"}),
        tp("route-log", [ref("HTTPRoute", "r")], accessLog={"disabled": True}),
    ]
    t = run(objs)
    by_port = {lis.port: lis for lis in t.l7.listeners}
    assert by_port[80].policy is not None
    assert by_port[80].policy.access_log == AccessLogPolicy(min_status=500)
    assert by_port[81].policy is None or by_port[81].policy.access_log is None
    reasons = [reason for _, reason, _ in ancestors(t, "route-log")]
    assert reasons and set(reasons) == {"Invalid"}, ancestors(t, "route-log")


def test_worker_settings_from_the_policy() -> None:
    from kgw_l7.accesslog import AccessLog
    from kgw_l7.channel import WorkerOptions
    from kgw_l7.config import Listener, ListenerPolicy
    from kgw_l7.context import WorkerContext
    from kgw_l7.logformat import parse_format

    ctx = WorkerContext.__new__(WorkerContext)
    ctx.options = WorkerOptions(access_log="off")
    ctx._log_settings = {}
    ctx.access_log = None
    rec = Listener("l", "127.0.0.1", 1, policy=ListenerPolicy(
        access_log=AccessLogPolicy(format="text", min_status=400)))
    assert ctx.listener_log(rec) is None  # (no access log at all: nothing to choose)
    ctx.access_log = AccessLog("/dev/null", parse_format("json"), 0, 1.0)
    try:
        s = ctx.listener_log(rec)
        assert s is not None and not s.off
        assert (s.min_status, s.sample) == (400, 1.0)
        assert not s.formatter.json and s.formatter is not ctx.access_log.formatter
        assert ctx.listener_log(rec) is s  # one formatter per distinct setting
        same_format = Listener("l", "127.0.0.1", 1, policy=ListenerPolicy(
            access_log=AccessLogPolicy(sample=0.5)))
        s2 = ctx.listener_log(same_format)
        assert s2 is not None and s2.formatter is ctx.access_log.formatter
        assert ctx.listener_log(Listener("l", "127.0.0.1", 1)) is None
    finally:
        ctx.access_log.close()
