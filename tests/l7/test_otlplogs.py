"""Where ``--access-log otlp[:URL]`` sends (kgw_l7.otlplogs.logs_url), and what a line
becomes as a log record body."""

from __future__ import annotations

import pytest

from kgw_l7.otlplogs import OtlpLogsError, _body, is_otlp, logs_url, timeout_seconds


@pytest.mark.parametrize(("target", "env", "url"), [
    ("otlp:http://c:4318", {}, "http://c:4318/v1/logs"),
    ("otlp:http://c:4318/", {}, "http://c:4318/v1/logs"),
    ("otlp:https://c/v1/logs", {}, "https://c/v1/logs"),
    ("otlp", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, "http://c:4318/v1/logs"),
    ("otlp", {"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c/custom",
              "OTEL_EXPORTER_OTLP_ENDPOINT": "http://other"}, "http://c/custom"),
])
def test_logs_url(target: str, env: dict, url: str) -> None:
    assert logs_url(target, env) == url


@pytest.mark.parametrize(("target", "env", "said"), [
    ("otlp", {}, "no collector named"),
    ("otlp:collector:4318", {}, "not an http:// or https:// URL"),
    ("otlp", {"OTEL_EXPORTER_OTLP_ENDPOINT": "grpc://c"}, "not an http:// or https:// URL"),
])
def test_unusable_endpoints_are_named(target: str, env: dict, said: str) -> None:
    with pytest.raises(OtlpLogsError, match=said):
        logs_url(target, env)


def test_which_targets_are_otlp() -> None:
    assert is_otlp("otlp") and is_otlp("otlp:http://c")
    assert not is_otlp(None) and not is_otlp("otlp.log") and not is_otlp("/var/log/otlp")


def test_timeout_from_the_standard_variables() -> None:
    assert timeout_seconds({}) == 10.0
    assert timeout_seconds({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}) == 2.5
    assert timeout_seconds({"OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "500",
                            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}) == 0.5
    with pytest.raises(OtlpLogsError):
        timeout_seconds({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"})


def test_json_lines_become_maps_without_nulls_and_text_stays_text() -> None:
    assert _body(b'{"method":"GET","response_code":200,"path":null}\n', True) == {
        "method": "GET", "response_code": 200}
    assert _body(b'[2026] "GET / HTTP/1.1" 200\n', False) == '[2026] "GET / HTTP/1.1" 200'
