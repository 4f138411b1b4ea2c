"""The access log's other sinks and events through a real ``kgw run``: L4 flow events
(TLS passthrough and termination go through the agent's userspace paths in every L4
mode, so ``kgw run -c DIR`` with no other flag logs them to stdout), and lines exported
as OTLP log records to a real OTLP/HTTP receiver (tests/otlp_receiver.py), including a
collector that refuses them."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import eventually, free_port, http_get, kgw_cmd, running
from tests.netns import Host, kgw_argv
from tests.otlp_receiver import Receiver
from tests.test_run_tlsterm import BACKEND_CERT, GATEWAY_CERT, PORT, TCP, TLS, config, exchange
from tests.test_run_tracing import get, write_conf

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"


def unknown_sni() -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw, server_hostname="nobody.other.org") as s:
                s.recv(1)


def test_l4_flow_events_with_kgw_run_defaults(host: Host, tmp_path: Path) -> None:
    bc, bk = tmp_path / "backend.crt", tmp_path / "backend.key"
    bc.write_text(BACKEND_CERT[0])
    bk.write_text(BACKEND_CERT[1])
    host.popen(kgw_argv("echo", "--address", "127.0.0.1", "--tcp-port", str(TCP), "--tls-port",
                        str(TLS), "--tls-cert", str(bc), "--tls-key", str(bk)),
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(config())
    out = tmp_path / "stdout"
    proc = host.popen(kgw_argv("run", "-c", str(conf)), stdout=out.open("w"),
                      stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, f"{ADMIN}/status")[0] == 200, timeout=30)
    eventually(lambda: host.call(exchange, "term.example.com", GATEWAY_CERT[0]), timeout=20)
    assert host.call(exchange, "pass.example.com", BACKEND_CERT[0])[2] == b"true\n"
    host.call(unknown_sni)
    time.sleep(0.5)
    proc.terminate()  # (the rest of the lines are written at shutdown)
    proc.wait(timeout=30)

    lines = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")]
    flows = [x for x in lines if (x["response_code_details"] or "").startswith("flow_")]
    by_route: dict[str, list[dict]] = {}
    for f in flows:
        by_route.setdefault(f["route_name"] or "", []).append(f)
    for route, listener in (("test/term", "test/gw/terminate"),
                            ("test/pass", "test/gw/passthrough")):
        events = by_route[route]
        kinds = [e["response_code_details"] for e in events]
        assert kinds.count("flow_open") == kinds.count("flow_close") >= 1, events
        close = next(e for e in events if e["response_code_details"] == "flow_close")
        assert close["listener"] == listener
        assert close["downstream_remote_address"].startswith("127.0.0.1:")
        assert close["bytes_received"] > 0 and close["bytes_sent"] > 0, close
        assert close["response_code"] == 0
    # terminated: the echo's line protocol in clear: PING + IS_TLS in, welcome + answers out
    term = next(e for e in by_route["test/term"] if e["response_code_details"] == "flow_close")
    assert term["upstream_host"] == f"127.0.0.1:{TCP}"
    assert term["bytes_received"] == len(b"PING\nIS_TLS\n")
    refused = [f for f in flows if f["response_code_details"] == "flow_refused"]
    assert [f["response_flags"] for f in refused] == ["NR"], refused


def test_access_log_lines_as_otlp_log_records(host: Host, tmp_path: Path) -> None:
    rx = host.call(lambda: Receiver(("127.0.0.1", 4318))).start()
    try:
        host.popen(kgw_argv("echo", "--port", "9101"), stdout=subprocess.DEVNULL)
        conf = write_conf(tmp_path / "conf", 8080, 9101)
        host.popen(kgw_argv("run", "-c", str(conf), "--access-log", "otlp:http://127.0.0.1:4318"),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
        eventually(lambda: host.call(get, 8080, "/warm")[0] == 200)
        assert host.call(get, 8080, "/hello?x=1", {"User-Agent": "otlp-test"})[0] == 200

        def hello() -> dict | None:
            with rx.lock:
                for r in rx.logs:
                    if isinstance(r.body, dict) and r.body.get("path") == "/hello?x=1":
                        return r.body
            return None
        body = eventually(hello, timeout=15)  # (flushed within the worker's 1 s timer)
        assert body["method"] == "GET" and body["response_code"] == 200
        assert body["route_name"] == "app/shop/0" and body["user_agent"] == "otlp-test"
        assert body["authority"] == "shop.example.com"
        assert "x_forwarded_for" not in body  # (null fields are left out of the map)
        with rx.lock:
            record = next(r for r in rx.logs if r.body is body)
        assert (record.severity, record.service) == ("INFO", "kgw")
        assert record.timestamp > 0
    finally:
        rx.close()


def test_a_refusing_collector_loses_lines_counted_and_said_once(tmp_path: Path) -> None:
    port, admin, otlp, backend = free_port(), f"127.0.0.1:{free_port()}", free_port(), free_port()
    rx = Receiver(("127.0.0.1", otlp), "fail").start()
    conf = write_conf(tmp_path / "conf", port, backend)
    cmd = kgw_cmd("run", "-c", str(conf), "--admin-address", admin, "--workers", "1",
                  "--l4-mode", "userspace", "--drain-delay", "0",
                  "--access-log", f"otlp:http://127.0.0.1:{otlp}")
    try:
        with running(kgw_cmd("echo", "--port", str(backend)), stdout=subprocess.DEVNULL), \
                running(cmd, env={"OTEL_EXPORTER_OTLP_TIMEOUT": "1000"}, stderr=subprocess.PIPE,
                        text=True) as proc:
            eventually(lambda: http_get(f"http://{admin}/readyz")[0] == 200, timeout=30)
            for n in range(20):
                assert eventually(lambda n=n: get(port, "/r%d" % n)[0] == 200)

            def dropped() -> float:
                text = http_get(f"http://{admin}/metrics")[1].decode()
                m = re.search(r'^kgw_access_log_dropped_total\{reason="write_error"\} (\S+)',
                              text, re.M)
                return float(m.group(1)) if m else 0.0
            assert eventually(lambda: dropped() >= 20, timeout=15)
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        said = [line for line in err.splitlines() if "access log: cannot write to otlp:" in line]
        assert len(said) == 1, err[-3000:]
        assert rx.requests >= 1
    finally:
        rx.close()


def test_otlp_without_an_endpoint_is_refused_at_start(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf", free_port(), free_port())
    r = subprocess.run(kgw_cmd("run", "-c", str(conf), "--admin-address",
                               f"127.0.0.1:{free_port()}", "--l4-mode", "userspace",
                               "--access-log", "otlp"),
                       capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})
    assert r.returncode == 1, r.stderr
    assert "--access-log otlp: no collector named" in r.stderr
