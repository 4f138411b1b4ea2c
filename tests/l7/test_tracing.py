"""Tracing's pure parts, table-tested: W3C traceparent parsing, the sampling decision, the
settings from flags and OTEL_* variables, the per-try traceparent of a retried request.
(End to end, through ``kgw run`` and a real OTLP receiver: tests/test_run_tracing.py.)"""

from __future__ import annotations

import re

import pytest

from kgw_l7.streams import out_request
from kgw_l7.tracing import Tracer, parse_traceparent, retraced, traced_headers
from kgw_l7.tracing_config import TracingConfigError, resolve

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
TP = re.compile(rb"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")


@pytest.mark.parametrize("value, expected", [
    (f"00-{TID}-{PID}-01", (TID.encode(), PID.encode(), True)),
    (f"00-{TID}-{PID}-00", (TID.encode(), PID.encode(), False)),
    (f"00-{TID}-{PID}-03", (TID.encode(), PID.encode(), True)),  # (other flag bits)
    (f" 00-{TID}-{PID}-01 ", (TID.encode(), PID.encode(), True)),  # (OWS)
    (f"01-{TID}-{PID}-01-future", (TID.encode(), PID.encode(), True)),  # later version
    (f"00-{TID}-{PID}-01-extra", None),  # version 00 is exactly 55 characters
    (f"01-{TID}-{PID}-01x", None),
    (f"ff-{TID}-{PID}-01", None),
    (f"00-{TID.upper()}-{PID}-01", None),
    (f"00-{'0' * 32}-{PID}-01", None),
    (f"00-{TID}-{'0' * 16}-01", None),
    (f"00-{TID}-{PID}-0g", None),
    (f"00-{TID[:-1]}-{PID}-01", None),
    ("", None),
    ("garbage", None),
])
def test_parse_traceparent(value: str, expected: object) -> None:
    assert parse_traceparent(value.encode()) == expected


def tracer(sampler: str = "parentbased_always_on", ratio: float = 1.0) -> Tracer:
    return Tracer("http://127.0.0.1:9/v1/traces", sampler, ratio, 1.0)


def test_incoming_context_is_followed_or_replaced() -> None:
    t = tracer("parentbased_traceidratio", 0.0)  # (no new trace would be sampled)
    tr = t.begin(((b"traceparent", f"00-{TID}-{PID}-01".encode()), (b"tracestate", b"a=1")))
    assert (tr.trace_id, tr.parent_id, tr.sampled, tr.tracestate) == \
        (TID.encode(), PID.encode(), True, b"a=1")
    assert tr.line == b"00-%s-%s-01" % (TID.encode(), tr.try_span)
    assert len(tr.try_span) == 16 and int(tr.try_span, 16) != 0 and tr.tracer is t
    tr = t.begin(((b"traceparent", f"00-{TID}-{PID}-00".encode()),))
    assert not tr.sampled and tr.line.endswith(b"-00") and tr.tries is None
    bad = t.begin(((b"traceparent", b"00-zz"), (b"tracestate", b"a=1")))
    assert bad.trace_id != TID.encode() and bad.parent_id == b"" and bad.tracestate is None
    assert len(bad.trace_id) == 32 and int(bad.trace_id, 16) != 0
    assert bad.had_context  # (its head is rebuilt: the client's fields must not go on)
    two = t.begin(((b"traceparent", f"00-{TID}-{PID}-01".encode()),) * 2)
    assert two.parent_id == b""  # (two traceparent fields: invalid)


@pytest.mark.parametrize("sampler, ratio, low_bits, expected", [
    ("always_on", 1.0, 0, True),
    ("always_off", 1.0, 0, False),
    ("traceidratio", 0.5, (1 << 63) - 1, True),
    ("traceidratio", 0.5, 1 << 63, False),
    ("traceidratio", 0.0, 0, False),
    ("parentbased_traceidratio", 1.0, (1 << 64) - 1, True),
    ("traceidratio", 0.01, int(0.01 * (1 << 64)) - 1, True),
    ("traceidratio", 0.01, int(0.01 * (1 << 64)), False),
    ("traceidratio", 0.01, 0xF << 60, False),
])
def test_new_trace_sampling(sampler: str, ratio: float, low_bits: int, expected: bool) -> None:
    trace_id = b"%032x" % ((7 << 64) | low_bits)
    assert tracer(sampler, ratio)._decide(trace_id, None) is expected


def test_new_ids_and_the_sampled_share() -> None:
    t = tracer("parentbased_traceidratio", 0.25)
    traces = [t.begin(()) for _ in range(20000)]
    assert all(TP.match(tr.line) and tr.line[3:35] == tr.trace_id for tr in traces)
    assert len({tr.trace_id for tr in traces}) == len(traces)
    share = sum(tr.sampled for tr in traces) / len(traces)
    assert 0.23 < share < 0.27, share
    assert all((tr.tries is not None) == tr.sampled for tr in traces)
    import kgw_l7.tracing as tracing

    # (all-zero ids are invalid: never sent; a half of the trace id may be zero)
    assert not tracing.valid_ids(0, 0, 5) and not tracing.valid_ids(1, 2, 0)
    assert tracing.valid_ids(0, 1, 1) and tracing.valid_ids(1, 0, 1)


def test_workers_forked_from_one_process_make_different_ids() -> None:
    import os

    t = tracer()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # (the child: its first trace id, then exit at once)
        os.write(w, t.begin(()).trace_id)
        os._exit(0)
    os.close(w)
    child = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != t.begin(()).trace_id


def test_a_retry_gets_its_own_client_span_in_traceparent() -> None:
    t = tracer()
    tr = t.begin(())
    first = tr.line
    headers = traced_headers([(b"host", b"x"), (b"traceparent", b"old"), (b"tracestate", b"s")],
                             tr)
    assert headers == [(b"host", b"x"), (b"traceparent", first)]
    assert t.begin_try(tr, "10.0.0.1", 80) is None
    assert t.begin_try(tr, "10.0.0.2", 80) == first
    assert tr.line != first and tr.line[:36] == first[:36]
    out = retraced(out_request(b"GET", b"/", headers, None, "none"), first, tr.line)
    assert out.headers == [(b"host", b"x"), (b"traceparent", tr.line)]
    raw = b"GET / HTTP/1.1\r\ntraceparent: " + first + b"\r\n\r\n"
    out = retraced(out_request(b"GET", b"/", None, raw, "none"), first, tr.line)
    assert out.raw == raw.replace(first, tr.line)
    assert [x[0] for x in tr.tries] == [first[36:52], tr.line[36:52]]
    assert tr.tries[0][6] == "superseded"


def test_queue_is_bounded_and_drops_counted() -> None:
    t = Tracer("http://127.0.0.1:9/v1/traces", "always_on", 1.0, 1.0, max_queue=4)
    for _ in range(3):
        tr = t.begin(())
        t.begin_try(tr, "10.0.0.1", 80)
        t.end(tr, b"GET", b"/", None, 200, b"1.2.3.4", b"h", b"http", b"1.1", None)
    assert len(t._queue) == 2 and t.counters()["tracing_spans_dropped"]["queue_full"] == 2


@pytest.mark.parametrize("endpoint, sample, env, expected", [
    (None, None, {}, None),
    ("http://c:4318", None, {}, ("http://c:4318/v1/traces", "parentbased_always_on", 1.0)),
    ("http://c:4318/v1/traces", 0.25, {"OTEL_TRACES_SAMPLER": "always_off"},
     ("http://c:4318/v1/traces", "parentbased_traceidratio", 0.25)),
    (None, None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318/"},
     ("https://c:4318/v1/traces", "parentbased_always_on", 1.0)),
    (None, None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/x"},
     ("http://c/x", "parentbased_always_on", 1.0)),
    (None, None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_SAMPLER":
                  "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
     ("http://c/v1/traces", "traceidratio", 0.1)),
    ("http://c", None, {"OTEL_SDK_DISABLED": "true"}, None),
    ("http://c", None, {"OTEL_TRACES_EXPORTER": "none"}, None),
])
def test_settings(endpoint: str | None, sample: float | None, env: dict, expected: object) -> None:
    got = resolve(endpoint, sample, env)
    assert (got if got is None else (got.url, got.sampler, got.ratio)) == expected


@pytest.mark.parametrize("endpoint, env, message", [
    ("c:4318", {}, "not an http:// or https:// URL"),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_SAMPLER": "x"},
     "OTEL_TRACES_SAMPLER='x'"),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "2"}, "must be between 0 and 1"),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c", "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"},
     "OTEL_EXPORTER_OTLP_TIMEOUT='soon'"),
])
def test_bad_settings_say_what(endpoint: str | None, env: dict, message: str) -> None:
    with pytest.raises(TracingConfigError, match=message.replace("(", r"\(")):
        resolve(endpoint, None, env)


@pytest.mark.parametrize("endpoint, env, expected", [
    ("http://c:4318", {}, ("http/protobuf", "http://c:4318/v1/traces")),
    ("http://c:4317", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("grpc", "http://c:4317")),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL":
            "GRPC"}, ("grpc", "https://c:4317")),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317/",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ("grpc", "http://c:4317/")),
    (None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("http/protobuf", "http://c:4318/v1/traces")),
    (None, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("grpc", "http://c:4317")),
])
def test_the_otlp_protocol(endpoint: str | None, env: dict, expected: object) -> None:
    got = resolve(endpoint, None, env)
    assert got is not None and (got.protocol, got.url) == expected


@pytest.mark.parametrize("endpoint, env, message", [
    ("http://c:4318", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_PROTOCOL='http/json': kgw exports traces with http/protobuf or grpc"),
    ("http://c:4318", {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
     "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='udp'"),
    ("http://c:4317/v1/traces", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
     "a gRPC collector's address has no path"),
    ("c:4317", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "not an http:// or https:// URL"),
])
def test_bad_protocol_settings_say_what(endpoint: str | None, env: dict, message: str) -> None:
    with pytest.raises(TracingConfigError, match=message.replace("(", r"\(")):
        resolve(endpoint, None, env)
