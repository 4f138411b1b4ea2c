"""The access log's formats (table-driven), its escaping of hostile input, its filters,
and its writer's faults (a path it cannot open, a pipe nobody reads, a full disk)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest

from kgw_l7 import accesslog, logformat
from kgw_l7.accesslog import AccessLog, Formatter, json_escape, text_escape
from kgw_l7.events import RequestHead
from kgw_l7.logformat import FormatError, parse_filter, parse_format, parse_sample

START = 1765062920.1235  # 2025-12-06T23:15:20.123Z


def head(method=b"GET", target=b"/a?b=1", version=b"1.1", headers=(), authority=b"example.com"):
    return RequestHead(method, target, version, tuple(headers), authority, authority, True,
                       "none", None, False, False, None)


def line(fmt: str, h=head(), status=200,  # noqa: B008 (an immutable head)
         received=0, sent=12, duration=0.0042,
         upstream=("10.0.0.7", 8080), route="default/web/0", request_id=b"rid-1", flags="",
         listener="default/gw/http", details=None, remote=b"192.0.2.1:40000",
         redact=logformat.DEFAULT_REDACT) -> bytes:
    return Formatter(parse_format(fmt, redact)).line(
        START, h, status, received, sent, duration, upstream, route, request_id, flags,
        listener, details, remote)


def test_json_line_has_the_documented_fields_in_order():
    out = line("json", head(headers=[(b"user-agent", b"curl/8"),
                                     (b"x-forwarded-for", b"203.0.113.9")]))
    assert out.endswith(b"}\n") and out.count(b"\n") == 1
    rec = json.loads(out)
    assert list(rec) == [name for name, _, _ in logformat.JSON_FIELDS]
    assert rec == {
        "start_time": "2025-12-06T23:15:20.123Z", "method": "GET", "path": "/a?b=1",
        "protocol": "HTTP/1.1", "response_code": 200, "response_flags": "-",
        "response_code_details": None, "listener": "default/gw/http", "bytes_received": 0,
        "bytes_sent": 12, "duration": 4, "upstream_host": "10.0.0.7:8080",
        "x_forwarded_for": "203.0.113.9", "user_agent": "curl/8", "request_id": "rid-1",
        "authority": "example.com", "route_name": "default/web/0",
        "downstream_remote_address": "192.0.2.1:40000"}


def test_json_line_of_a_request_refused_before_its_head():
    rec = json.loads(line("json", None, status=400, sent=0, duration=0.0, upstream=None,
                          route=None, request_id=b"", flags="DPE",
                          details="duplicate Host header"))
    assert rec["method"] is rec["path"] is rec["protocol"] is rec["upstream_host"] is None
    assert rec["user_agent"] is rec["route_name"] is None
    assert (rec["response_code"], rec["response_flags"]) == (400, "DPE")
    assert rec["response_code_details"] == "duplicate Host header"
    assert rec["authority"] == rec["request_id"] == ""


HOSTILE = [
    b'/"quoted"', b"/back\\slash", b"/new\nline", b"/cr\r\ttab", b"/nul\x00bell\x07",
    b"/del\x7f", b"/latin\xe9\xff", b"/utf8-\xc3\xa9", b"/\x1b[31mred", b'"}{"injected":1',
]


@pytest.mark.parametrize("value", HOSTILE)
def test_json_escapes_any_bytes_losslessly(value):
    out = line("json", head(target=value, headers=[(b"user-agent", value)]),
               details=value.decode("latin-1"))
    assert out.count(b"\n") == 1 and out.isascii()
    rec = json.loads(out)
    assert rec["path"].encode("latin-1") == value
    assert rec["user_agent"].encode("latin-1") == value
    assert json.loads(b'"' + json_escape(value) + b'"').encode("latin-1") == value


@pytest.mark.parametrize("value, expected", [
    (b"plain/path?x=1", b"plain/path?x=1"),
    (b'say "hi"', b'say \\"hi\\"'),
    (b"a\\b", b"a\\\\b"),
    (b"line\nbreak", b"line\\x0abreak"),
    (b"\x00\x1f\x7f\x80\xff", b"\\x00\\x1f\\x7f\\x80\\xff"),
])
def test_text_escapes_as_nginx(value, expected):
    assert text_escape(value) == expected
    out = line("text:%REQ(:PATH)%", head(target=value))
    assert out == expected + b"\n"


# The escaping's fast path (a value every byte of which goes as it is) against the slow
# one: which bytes take it, and what the others become, byte for byte.
CLEAN_CASES = [
    # value, json_clean/text_clean, json_escape, text_escape
    (b"", True, b"", b""),
    (b"/plain/path?x=1&y=%20 ~!@#$^*()", True, b"/plain/path?x=1&y=%20 ~!@#$^*()",
     b"/plain/path?x=1&y=%20 ~!@#$^*()"),
    (b" ", True, b" ", b" "),
    (b"~", True, b"~", b"~"),
    (b"\x00", False, b"\\u0000", b"\\x00"),
    (b"\x1f", False, b"\\u001f", b"\\x1f"),
    (b"\t\n\r\x08\x0c", False, b"\\t\\n\\r\\b\\f", b"\\x09\\x0a\\x0d\\x08\\x0c"),
    (b'a"b', False, b'a\\"b', b'a\\"b'),
    (b"a\\b", False, b"a\\\\b", b"a\\\\b"),
    (b"\x7f", False, b"\\u007f", b"\\x7f"),
    (b"caf\xc3\xa9", False, b"caf\\u00c3\\u00a9", b"caf\\xc3\\xa9"),
    (b"\xff", False, b"\\u00ff", b"\\xff"),
    # a lone surrogate as a client may send it (UTF-8 of U+D800: not valid UTF-8)
    (b"\xed\xa0\x80", False, b"\\u00ed\\u00a0\\u0080", b"\\xed\\xa0\\x80"),
    (b"clean then \x80", False, b"clean then \\u0080", b"clean then \\x80"),
]


@pytest.mark.parametrize("value, clean, as_json, as_text", CLEAN_CASES)
def test_escaping_fast_path_table(value, clean, as_json, as_text):
    assert accesslog.json_clean(value) is clean and accesslog.text_clean(value) is clean
    assert json_escape(value) == as_json and text_escape(value) == as_text
    if clean:  # (the fast path hands the value itself on: no copy)
        assert json_escape(value) is value and text_escape(value) is value
    assert json.loads(b'"' + as_json + b'"').encode("latin-1") == value


def test_every_byte_takes_the_fast_path_exactly_when_it_needs_no_escape():
    for c in range(256):
        b = bytes((c,))
        printable = 0x20 <= c < 0x7F and c not in (0x22, 0x5C)
        assert accesslog.json_clean(b) is printable, c
        assert accesslog.text_clean(b) is printable, c
        assert (json_escape(b) == b) is printable and (text_escape(b) == b) is printable, c


@pytest.mark.parametrize("name, expected", [
    ("default/web/0", b"default/web/0"),
    ('q"uote', b'q\\"uote'),
    ("caf\u00e9", b"caf\\u00c3\\u00a9"),  # (a name's UTF-8 bytes, each as Latin-1)
    ("lone \ud800 surrogate", b"lone ? surrogate"),  # (not encodable: replaced)
])
def test_names_from_the_config_are_escaped_once_and_lone_surrogates_replaced(name, expected):
    rec = line("json", route=name, details=name, listener=name)
    assert rec.isascii() and rec.count(b"\n") == 1
    for field in (b'"route_name":"', b'"listener":"', b'"response_code_details":"'):
        assert field + expected + b'"' in rec
    assert json.loads(rec)["route_name"] == json.loads(b'"' + expected + b'"')


TEXT_CASES = [
    ("%START_TIME%", b"2025-12-06T23:15:20.123Z"),
    ("%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%", b"GET /a?b=1 HTTP/1.1"),
    ("%RESPONSE_CODE% %RESPONSE_FLAGS% %DURATION%", b"200 - 4"),
    ("%BYTES_RECEIVED%/%BYTES_SENT%", b"0/12"),
    ("%UPSTREAM_HOST% %ROUTE_NAME% %LISTENER_NAME%",
     b"10.0.0.7:8080 default/web/0 default/gw/http"),
    ("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
     b"192.0.2.1:40000 192.0.2.1"),
    ("%REQ(X-REQUEST-ID)% %REQ(:AUTHORITY)%", b"rid-1 example.com"),
    ("%REQ(USER-AGENT)% %REQ(x-missing)%", b"curl/8 -"),
    ("%RESPONSE_CODE_DETAILS%", b"-"),
    ("100%% %RESPONSE_CODE%", b"100% 200"),
    ("no operators", b"no operators"),
    ("%REQ(AUTHORIZATION)% %REQ(Cookie)%", b"[redacted] -"),
]


@pytest.mark.parametrize("template, expected", TEXT_CASES)
def test_text_operators(template, expected):
    h = head(headers=[(b"user-agent", b"curl/8"), (b"authorization", b"Bearer secret")])
    assert line("text:" + template, h) == expected + b"\n"


def test_text_default_is_envoys():
    out = line("text", head(headers=[(b"user-agent", b"curl/8")]))
    assert out == (b'[2025-12-06T23:15:20.123Z] "GET /a?b=1 HTTP/1.1" 200 - 0 12 4 "-" '
                   b'"curl/8" "rid-1" "example.com" "10.0.0.7:8080"\n')


def test_ipv6_remote_without_port():
    assert line("text:%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
                remote=b"[2001:db8::1]:443") == b"2001:db8::1\n"


def test_redaction_list_applies_to_json_fields_and_text_operators():
    h = head(headers=[(b"user-agent", b"secret-agent")])
    assert json.loads(line("json", h, redact=("User-Agent",)))["user_agent"] == "[redacted]"
    assert line("text:%REQ(user-agent)%", h, redact=("user-agent",)) == b"[redacted]\n"
    assert b"secret" not in line("text:%REQ(cookie)%", head(headers=[(b"cookie", b"secret")]))


@pytest.mark.parametrize("spec, message", [
    ("text:%START_TIME% %BOGUS%", "unknown operator %BOGUS% at position 18"),
    ("text:%RESP(SERVER)%", "unknown operator %RESP(SERVER)% at position 5"),
    ("text:%START_TIME", "malformed operator '%START_TIME' at position 5"),
    ("text:50% off", "malformed operator"),
    ("text:%REQ(bad header)%", "not a header name"),
    ("xml", "expected 'json', 'text' or 'text:TEMPLATE'"),
])
def test_a_bad_format_is_refused_naming_what_and_where(spec, message):
    with pytest.raises(FormatError, match="access log format") as err:
        parse_format(spec)
    assert message in str(err.value)


def test_filter_and_sample_values():
    assert (parse_filter("all"), parse_filter("errors"), parse_filter("server-errors")) == \
        (0, 400, 500)
    assert parse_sample("0.25") == 0.25
    for bad in ("0", "1.5", "x"):
        with pytest.raises(FormatError, match="sample"):
            parse_sample(bad)
    with pytest.raises(FormatError, match="filter"):
        parse_filter("warnings")


def test_operator_codes_match_the_compiled_constants():
    """accesslog.pxd repeats logformat's codes as C constants: same names, same values."""
    pxd = Path(logformat.__file__).parent / "accesslog.pxd"
    declared = {}
    for raw in pxd.read_text().splitlines():
        parts = raw.split("=")
        if len(parts) == 2 and raw.startswith("    ") and parts[1].strip().isdigit():
            declared[parts[0].strip()] = int(parts[1])
    assert declared and all(getattr(logformat, k) == v for k, v in declared.items())


def access_log(target, fmt="json", **kw) -> AccessLog:
    return AccessLog(target, parse_format(fmt), **kw)


def log_one(log: AccessLog, status=200, path=b"/") -> None:
    log.log(START, head(target=path), status, 0, 0, 0.001, None, None, b"", "", "l", None, b"")


def test_lines_are_written_on_flush_and_close(tmp_path):
    target = tmp_path / "access.log"
    log = access_log(str(target))
    for i in range(3):
        log_one(log, path=b"/%d" % i)
    assert target.read_text() == ""  # buffered
    log.flush()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
            not target.exists() or target.read_text().count("\n") < 3):
        time.sleep(0.01)
    log_one(log, path=b"/3")
    log.close()
    paths = [json.loads(x)["path"] for x in target.read_text().splitlines()]
    assert paths == ["/0", "/1", "/2", "/3"]
    assert log.lines == 4 and not log.dropped


def test_a_full_chunk_is_handed_over_without_waiting_for_the_timer(tmp_path):
    target = tmp_path / "access.log"
    log = access_log(str(target))
    big = b"/" + b"x" * 1000
    for _ in range(accesslog.CHUNK // 1000 + 1):
        log_one(log, path=big)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and target.stat().st_size < accesslog.CHUNK:
        time.sleep(0.01)
    assert target.stat().st_size >= accesslog.CHUNK
    log.close()


def test_filters_errors_and_sampling(tmp_path):
    target = tmp_path / "access.log"
    log = access_log(str(target), min_status=500)
    for status in (200, 404, 500, 503):
        log_one(log, status=status)
    log.close()
    assert [json.loads(x)["response_code"] for x in target.read_text().splitlines()] == \
        [500, 503]
    target2 = tmp_path / "sampled.log"
    log = access_log(str(target2), sample=0.1)
    for _ in range(2000):
        log_one(log)
    log.close()
    assert 100 < target2.read_text().count("\n") < 320


def test_an_unwritable_path_is_reported_once_and_counted(tmp_path, caplog):
    target = tmp_path / "missing-dir" / "access.log"
    with caplog.at_level(logging.INFO, logger="kgw.l7.accesslog"):
        log = access_log(str(target))  # (said at once: opened at start-up)
        for _ in range(3):
            log_one(log)
            log.flush()
            deadline = time.monotonic() + 5
            while log.unwritten() and time.monotonic() < deadline:
                time.sleep(0.01)
        assert log.write_errors == 3 and log.dropped == {"write_error": 3}
        # The directory appears: writes resume by themselves, and that is said too.
        target.parent.mkdir()
        log_one(log, path=b"/again")
        log.close()
    errors = [r for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(errors) == 1 and str(target) in errors[0].getMessage()
    assert "No such file" in errors[0].getMessage()
    assert any("writing again" in r.getMessage() for r in caplog.records)
    assert [json.loads(x)["path"] for x in target.read_text().splitlines()] == ["/again"]


def test_a_blocked_pipe_drops_and_counts_lines_without_blocking(monkeypatch):
    """Nobody reads the pipe: the writer thread blocks, the buffer fills, lines are
    dropped and counted, and log()/flush() never wait."""
    monkeypatch.setattr(accesslog, "MAX_PENDING", 256 * 1024)
    r, w = os.pipe()
    try:
        os.set_blocking(w, True)
        log = access_log(None)
        log._fd = w  # as if stdout were this pipe
        log._pipe = True
        big = b"/" + b"y" * 2000
        began = time.monotonic()
        for _ in range(2000):  # ~4 MB against a 64 KiB pipe and a 256 KiB buffer
            log_one(log, path=big)
        log.flush()
        assert time.monotonic() - began < 2.0
        assert log.dropped.get("buffer_full", 0) > 1000
        os.close(r)  # the writer's pending write now fails: the thread ends
        r = -1
        log.close(timeout=5)
    finally:
        if r >= 0:
            os.close(r)
        os.close(w)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root)")
def test_a_full_disk_is_reported_once_and_counted(tmp_path, caplog):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        log = access_log(str(mnt / "access.log"))
        big = b"/" + b"z" * 4000
        with caplog.at_level(logging.ERROR, logger="kgw.l7.accesslog"):
            for _ in range(5):
                for _ in range(20):  # 80 KB per batch: more than the disk holds
                    log_one(log, path=big)
                log.flush()
            log.close()
        errors = [r for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(errors) == 1 and "No space left" in errors[0].getMessage()
        assert log.write_errors >= 4 and log.dropped["write_error"] >= 80
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
