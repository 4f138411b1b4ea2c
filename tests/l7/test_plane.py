"""L7Plane as the supervisor uses it: HTTPS/SNI, hot reload under load, listener
changes and failures, connection limits, worker restarts."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import threading
import time
from typing import Any

import pytest
from cryptography import x509

from kgw_l7.config import (
    Backend, Certificate, Endpoint, HeaderModifier, Filters, L7Config, Listener, PathMatch,
    Route, RouteMatch, Rule, VirtualHost,
)

from .conftest import Echo, PlaneRunner, eventually, free_port, raw, request, self_signed

pytestmark = pytest.mark.slow


def be(e: Echo) -> Backend:
    return Backend(name=f"infra/{e.pod[:2]}:8080", endpoints=(Endpoint("127.0.0.1", e.port),))


def simple_vhost(host: str, e: Echo, path: str = "/", tag: str = "") -> VirtualHost:
    filters = Filters(request_headers=HeaderModifier(set=(("X-Tag", tag),))) if tag else Filters()
    r = Rule(name=f"infra/{host}{path}/0", route=f"infra/{host}", gateway="infra/gw",
             backends=(be(e),), filters=filters)
    return VirtualHost(host, (Route(RouteMatch(path=PathMatch("PathPrefix", path)), r),))


# -- HTTPS ----------------------------------------------------------------------------------

def _tls_get(port: int, sni: str | None, host: str, path: str = "/") -> tuple[int, bytes, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock:
        with ctx.wrap_socket(raw_sock, server_hostname=sni) as s:
            der = s.getpeercert(binary_form=True)
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            assert s.selected_alpn_protocol() in (None, "http/1.1")
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
    status = int(out.split(b" ", 2)[1])
    return status, out.split(b"\r\n\r\n", 1)[1], der


def _der(pem: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)


def test_https_sni_selection_421_and_cert_reload(echoes):
    v1, v2 = echoes["v1"], echoes["v2"]
    a = self_signed(["a.example.com"])
    w = self_signed(["*.wild.example.com"])
    d = self_signed(["default.example.com"])
    port = free_port()

    def cfg(a_cert: tuple[str, str], gen: int) -> L7Config:
        certs = (Certificate(("a.example.com",), *a_cert),
                 Certificate(("*.wild.example.com",), *w),
                 Certificate(("broken.example.com",), "not a pem", "nope"),
                 Certificate(("*",), *d))
        vhosts = (simple_vhost("a.example.com", v1), simple_vhost("*.wild.example.com", v2),
                  simple_vhost("*", v1))
        return L7Config((Listener("tls", "127.0.0.1", port, "HTTPS", certs, vhosts),), gen)

    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(cfg(a, 1))
        status, body, der = _tls_get(port, "a.example.com", "a.example.com")
        assert status == 200 and der == _der(a[0]) and json.loads(body)["pod"].startswith("v1")
        status, body, der = _tls_get(port, "x.wild.example.com", "x.wild.example.com")
        assert status == 200 and der == _der(w[0]) and json.loads(body)["pod"].startswith("v2")
        # No SNI, or an unknown name: the "*" certificate.
        assert _tls_get(port, None, "a.example.com")[2] == _der(d[0])
        assert _tls_get(port, "zzz.test", "zzz.test")[2] == _der(d[0])
        # A Host that belongs to another certificate than the SNI's: 421.
        assert _tls_get(port, "a.example.com", "x.wild.example.com")[0] == 421
        assert _tls_get(port, "x.wild.example.com", "other.test")[0] == 421
        assert _tls_get(port, "zzz.test", "a.example.com")[0] == 421
        # echo sees X-Forwarded-Proto https
        doc = json.loads(_tls_get(port, "a.example.com", "a.example.com")[1])
        assert doc["headers"]["X-Forwarded-Proto"] == ["https"]
        # A changed certificate is served from the next handshake, on the same socket.
        a2 = self_signed(["a.example.com"])
        runner.apply(cfg(a2, 2))
        assert _tls_get(port, "a.example.com", "a.example.com")[2] == _der(a2[0])
    finally:
        runner.close()


def test_421_between_listeners_sharing_one_certificate(echoes):
    """Four Gateway listeners on one port serving the same certificate (upstream's
    HTTPRouteHTTPSListenerDetectMisdirectedRequests): the listener the Host selects must
    be the one the SNI selected, else 421; within it, no route is a 404."""
    v1, v2, v3 = echoes["v1"], echoes["v2"], echoes["v1"]
    cert = self_signed(["example.org", "*.example.org"])
    port = free_port()
    names = ("*", "second-example.org", "*.wildcard.org", "fourth-example.wildcard.org")
    certs = tuple(Certificate((n,), *cert) for n in names)
    vhosts = (simple_vhost("example.org", v1, tag="one"),
              simple_vhost("second-example.org", v2, tag="two"),
              simple_vhost("*.wildcard.org", v3, tag="three"),
              simple_vhost("fourth-example.wildcard.org", v1, tag="four"))
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(L7Config((Listener("tls", "127.0.0.1", port, "HTTPS", certs, vhosts),), 1))
        cases = [
            ("example.org", "example.org", 200, "one"),
            ("example.org", "second-example.org", 421, None),
            ("example.org", "unknown-example.org", 404, None),
            ("second-example.org", "second-example.org", 200, "two"),
            ("second-example.org", "example.org", 421, None),
            ("second-example.org", "unknown-example.org", 421, None),
            ("third-example.wildcard.org", "fith-example.wildcard.org", 200, "three"),
            ("third-example.wildcard.org", "fourth-example.wildcard.org", 421, None),
            ("fourth-example.wildcard.org", "fourth-example.wildcard.org", 200, "four"),
            ("fourth-example.wildcard.org", "fith-example.wildcard.org", 421, None),
            ("unknown-example.org", "example.org", 200, "one"),
            ("unknown-example.org", "unknown-example.org", 404, None),
        ]
        for sni, host, want, tag in cases:
            status, body, _ = _tls_get(port, sni, host, "/detect-misdirected-requests")
            assert status == want, (sni, host, status, body)
            if tag:
                assert json.loads(body)["headers"]["X-Tag"] == [tag], (sni, host)
    finally:
        runner.close()


# -- hot reload -----------------------------------------------------------------------------

def test_hot_reload_under_load_loses_nothing(echoes):
    """Clients hammer the proxy over keep-alive and fresh connections while routes,
    filters, virtual hosts and a second listener come and go: zero failed requests."""
    v1, v2 = echoes["v1"], echoes["v2"]
    port, port2 = free_port(), free_port()

    def cfg(gen: int) -> L7Config:
        vhosts = [simple_vhost("*", v1 if gen % 2 else v2, tag=f"g{gen}")]
        if gen % 3 == 0:
            vhosts.insert(0, simple_vhost("extra.test", v2, path="/extra"))
        listeners = [Listener("main", "127.0.0.1", port, virtual_hosts=tuple(vhosts))]
        if gen % 2 == 0:
            listeners.append(Listener("side", "127.0.0.1", port2,
                                      virtual_hosts=(simple_vhost("*", v1),)))
        return L7Config(tuple(listeners), gen)

    runner = PlaneRunner(workers=2, access_log="off")
    stop = threading.Event()
    errors: list[str] = []
    counts = [0]
    tags: set[str] = set()
    lock = threading.Lock()

    def client(keep_alive: bool) -> None:
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                r = request(port, "/load", conn=conn)
                if r.status != 200:
                    errors.append(f"status {r.status}")
                with lock:
                    counts[0] += 1
                    tags.add(r.json()["headers"]["X-Tag"][0])
                if not keep_alive:
                    conn.close()
                    conn = None
            except Exception as exc:  # noqa: BLE001 - every failure is a finding
                errors.append(repr(exc))
                conn = None
        if conn is not None:
            conn.close()

    try:
        runner.apply(cfg(1))
        threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(4)]
        for t in threads:
            t.start()
        for gen in range(2, 14):
            time.sleep(0.15)
            runner.apply(cfg(gen))
            assert runner.plane.listener_errors() == {}
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
        assert errors == []
        assert counts[0] > 100
        assert {"g1", "g13"} <= tags  # the first and the last config both served
        # The router swap is immediate: the next request sees the last generation.
        assert request(port, "/load").json()["headers"]["X-Tag"] == ["g13"]
        assert "kgw_l7_config_generation 13.0" in runner.metrics()
    finally:
        stop.set()
        runner.close()


def test_listener_removal_drains_and_bind_errors_are_reported(echoes):
    v1 = echoes["v1"]
    port, port2 = free_port(), free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy_port = blocker.getsockname()[1]
    l1 = Listener("one", "127.0.0.1", port, virtual_hosts=(simple_vhost("*", v1),))
    l2 = Listener("two", "127.0.0.1", port2, virtual_hosts=(simple_vhost("*", v1),))
    bad = Listener("busy", "127.0.0.1", busy_port, virtual_hosts=(simple_vhost("*", v1),))
    remote = Listener("remote", "192.0.2.1", port, virtual_hosts=(simple_vhost("*", v1),))
    silly = Listener("silly", "not-an-address", 70000, virtual_hosts=(simple_vhost("*", v1),))
    runner = PlaneRunner(workers=2, access_log="off")
    try:
        runner.apply(L7Config((l1, l2, bad, remote, silly), 1))
        errs = runner.plane.listener_errors()
        assert set(errs) == {"busy", "remote", "silly"}
        assert "in use" in errs["busy"] and "192.0.2.1" in errs["remote"]
        assert request(port, "/").status == 200 and request(port2, "/").status == 200
        # An in-flight slow request on "two" completes although "two" is removed.
        result: dict[str, Any] = {}

        def slow() -> None:
            result["r"] = request(port2, "/slow?delay=700ms")

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.2)
        runner.apply(L7Config((l1,), 2))
        assert runner.plane.listener_errors() == {}
        t.join(5)
        assert result["r"].status == 200
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port2), timeout=1).close()
        assert request(port, "/").status == 200
    finally:
        blocker.close()
        runner.close()


def test_connection_limit_per_worker(echoes):
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off", max_connections_per_worker=3)
    try:
        runner.apply(L7Config((Listener("l", "127.0.0.1", port,
                                        virtual_hosts=(simple_vhost("*", echoes["v1"]),)),), 1))
        held = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(3)]
        for c in held:
            assert request(port, "/", conn=c).status == 200
        # The fourth connection is closed at once.
        assert raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""
        held[0].close()
        eventually(lambda: request(port, "/").status == 200, timeout=5)
        for c in held[1:]:
            c.close()
        assert 'kgw_l7_rejected_connections_total{reason="limit"} 1.0' in runner.metrics()
    finally:
        runner.close()


def test_worker_restarted_after_crash(echoes):
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(L7Config((Listener("l", "127.0.0.1", port,
                                        virtual_hosts=(simple_vhost("*", echoes["v1"]),)),), 7))
        pid = runner.plane.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: runner.plane.worker_pids() and runner.plane.worker_pids()[0] != pid,
                   timeout=10)
        eventually(lambda: request(port, "/").status == 200, timeout=10)
        text = runner.metrics()
        assert "kgw_l7_config_generation 7.0" in text
        assert "kgw_l7_worker_restarts_total 1.0" in text
    finally:
        runner.close()


def test_backend_tls(tmp_path):
    """Backend.tls: the proxy speaks TLS to the backend, checking its certificate."""
    import subprocess
    import sys

    from kgw_l7.config import UpstreamTLS

    from .conftest import ROOT, wait_port

    cert, key = self_signed(["backend.test"])
    (tmp_path / "c.pem").write_text(cert)
    (tmp_path / "k.pem").write_text(key)
    http_port, tls_port, port = free_port(), free_port(), free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1", "--port",
         str(http_port), "--tls-port", str(tls_port), "--tls-cert", str(tmp_path / "c.pem"),
         "--tls-key", str(tmp_path / "k.pem"), "--pod", "tls-echo", "--quiet"], cwd=ROOT)
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        wait_port("127.0.0.1", tls_port)

        def listener(tls: UpstreamTLS) -> Listener:
            b = Backend("infra/tls:443", endpoints=(Endpoint("127.0.0.1", tls_port),),
                        protocol="https", tls=tls)
            r = Rule("infra/tls/0", "infra/tls", "infra/gw", backends=(b,))
            return Listener("l", "127.0.0.1", port,
                            virtual_hosts=(VirtualHost("*", (Route(RouteMatch(), r),)),))

        runner.apply(L7Config((listener(UpstreamTLS("backend.test", ca_pem=cert)),), 1))
        r = request(port, "/tls")
        assert r.status == 200
        doc = r.json()
        assert doc["tls"]["version"] in ("TLSv1.2", "TLSv1.3")
        assert doc["sni"] == "backend.test"
        # A name the certificate does not carry: the handshake is refused -> 502.
        runner.apply(L7Config((listener(UpstreamTLS("other.test", ca_pem=cert)),), 2))
        assert request(port, "/tls").status == 502
        # Extra accepted SANs.
        runner.apply(L7Config((listener(UpstreamTLS("other.test", ca_pem=cert,
                                                    subject_alt_names=("backend.test",))),), 3))
        assert request(port, "/tls").status == 200
    finally:
        runner.close()
        echo.terminate()
        echo.wait(5)


def test_port_held_by_another_reuseport_process_is_refused(echoes):
    """SO_REUSEPORT would let two processes share a port silently: the plane checks
    first and reports the listener instead of splitting traffic with a stranger."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    ok_port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(L7Config((
            Listener("taken", "127.0.0.1", port, virtual_hosts=(simple_vhost("*", echoes["v1"]),)),
            Listener("free", "127.0.0.1", ok_port,
                     virtual_hosts=(simple_vhost("*", echoes["v1"]),))), 1))
        errs = runner.plane.listener_errors()
        assert set(errs) == {"taken"} and "another process" in errs["taken"]
        assert request(ok_port, "/").status == 200
        # Once the other process lets go, the next config takes the port.
        other.close()
        runner.apply(L7Config((
            Listener("taken", "127.0.0.1", port, virtual_hosts=(simple_vhost("*", echoes["v1"]),)),
            Listener("free", "127.0.0.1", ok_port,
                     virtual_hosts=(simple_vhost("*", echoes["v1"]),))), 2))
        assert runner.plane.listener_errors() == {}
        assert request(port, "/").status == 200
    finally:
        other.close()
        runner.close()


class HeadCapture:
    """A backend that records each request head exactly as it arrives and answers 200."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                self.heads.append(head + b"\r\n\r\n")  # (the tests send no bodies)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def close(self) -> None:
        self.sock.close()


def test_request_head_forwarded_as_received_or_rebuilt():
    """What a backend receives, byte for byte: an unrewritten head keeps the client's
    request line, field order and case, with the proxy's fields and an "add" appended; a
    head with a field the proxy owns (X-Forwarded-For), an empty line before it, or a
    "set" modifier is rebuilt."""
    cap = HeadCapture()
    port = free_port()
    backend = Backend(name="infra/cap:80", endpoints=(Endpoint("127.0.0.1", cap.port),))
    add = Rule(name="infra/add/0", route="infra/add", gateway="infra/gw", backends=(backend,),
               filters=Filters(request_headers=HeaderModifier(add=(("X-Add", "1"),))))
    put = Rule(name="infra/set/0", route="infra/set", gateway="infra/gw", backends=(backend,),
               filters=Filters(request_headers=HeaderModifier(set=(("X-Set", "1"),))))
    vhost = VirtualHost("*", (Route(RouteMatch(path=PathMatch("PathPrefix", "/set")), put),
                              Route(RouteMatch(path=PathMatch("PathPrefix", "/")), add)))
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(L7Config((Listener("l", "127.0.0.1", port, virtual_hosts=(vhost,)),), 1))
        raw(port, b"GET /a?q=1 HTTP/1.1\r\nHost: svc.test\r\nX-Mixed-Case: v\r\n\r\n",
            read_all=False)
        raw(port, b"GET /b HTTP/1.1\r\nHost: svc.test\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
            read_all=False)
        raw(port, b"\r\nGET /c HTTP/1.1\r\nHost: svc.test\r\n\r\n", read_all=False)
        raw(port, b"GET /set HTTP/1.1\r\nHost: svc.test\r\nX-Set: old\r\n\r\n", read_all=False)
        eventually(lambda: len(cap.heads) == 4, timeout=5)
        a, b, c, d = cap.heads
        rid = re.search(rb"x-request-id: ([0-9a-f-]{36})\r\n", a)
        assert rid is not None
        assert a == (b"GET /a?q=1 HTTP/1.1\r\nHost: svc.test\r\nX-Mixed-Case: v\r\n"
                     b"x-request-id: " + rid.group(1) + b"\r\nx-forwarded-for: 127.0.0.1\r\n"
                     b"x-forwarded-proto: http\r\nx-add: 1\r\n\r\n")
        assert b.startswith(b"GET /b HTTP/1.1\r\nhost: svc.test\r\n")
        assert b"x-forwarded-for: 10.0.0.1, 127.0.0.1\r\n" in b and b.endswith(b"x-add: 1\r\n\r\n")
        assert c.startswith(b"GET /c HTTP/1.1\r\nhost: svc.test\r\n")
        assert d.startswith(b"GET /set HTTP/1.1\r\nhost: svc.test\r\n")
        assert b"x-set: 1\r\n" in d and b"old" not in d
    finally:
        runner.close()
        cap.close()


# -- rejections nobody could see, readiness, restarts, counters --------------------------------

def _handshake_alert(port: int, sni: str | None) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw_sock:
        with pytest.raises(ssl.SSLError) as err:
            ctx.wrap_socket(raw_sock, server_hostname=sni)
    return str(err.value)


def test_unknown_or_missing_sni_gets_unrecognized_name_logged_and_counted(echoes, capfd):
    """Without a certificate for the name (and no "*" one), the handshake fails with the
    unrecognized_name alert (not a bare close), counted per listener and logged at most
    once per interval."""
    port = free_port()
    a = self_signed(["a.example.com"])
    runner = PlaneRunner(workers=1, access_log="off")
    try:
        runner.apply(L7Config((Listener("tls", "127.0.0.1", port, "HTTPS",
                                        (Certificate(("a.example.com",), *a),),
                                        (simple_vhost("a.example.com", echoes["v1"]),)),), 1))
        for _ in range(5):
            assert "UNRECOGNIZED_NAME" in _handshake_alert(port, "b.example.com")
        assert "UNRECOGNIZED_NAME" in _handshake_alert(port, None)
        assert _tls_get(port, "a.example.com", "a.example.com")[0] == 200
        text = runner.metrics()
        assert ('kgw_l7_tls_handshake_refusals_total{listener="tls",'
                'reason="unknown_server_name"} 5.0') in text
        assert ('kgw_l7_tls_handshake_refusals_total{listener="tls",'
                'reason="no_server_name"} 1.0') in text
    finally:
        runner.close()
    err = capfd.readouterr().err
    assert err.count("unrecognized_name alert") == 1, err  # rate-limited per listener
    assert "'b.example.com'" in err


def test_health_says_when_a_listener_is_not_served(echoes):
    """What /readyz reports: a listener that cannot be opened, and no worker running."""
    port = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    busy = blocker.getsockname()[1]
    runner = PlaneRunner(workers=1, access_log="off", restart_delay=1.5)
    try:
        ok = Listener("ok", "127.0.0.1", port, virtual_hosts=(simple_vhost("*", echoes["v1"]),))
        runner.apply(L7Config((ok,), 1))
        assert runner.call(runner.plane.health()) == []
        bad = Listener("busy", "127.0.0.1", busy, virtual_hosts=(simple_vhost("*", echoes["v1"]),))
        runner.apply(L7Config((ok, bad), 2))
        [problem] = runner.call(runner.plane.health())
        assert problem.startswith("listener busy not served: cannot listen on")
        runner.apply(L7Config((ok,), 3))
        assert runner.call(runner.plane.health()) == []
        os.kill(runner.plane.worker_pids()[0], signal.SIGKILL)
        eventually(lambda: runner.call(runner.plane.health()) == ["no L7 worker running"],
                   timeout=2)
        eventually(lambda: runner.call(runner.plane.health()) == [], timeout=10)
    finally:
        blocker.close()
        runner.close()


def test_restart_delay_starts_over_after_a_healthy_period(echoes):
    """A worker that crashes after running fine for a while is not treated as crash
    looping: its restart delay does not keep growing."""
    runner = PlaneRunner(workers=1, access_log="off", healthy_after=0.3)
    try:
        worker = runner.plane._workers[0]
        for _ in range(4):
            pid = runner.plane.worker_pids()[0]
            time.sleep(0.4)  # healthy for longer than healthy_after
            os.kill(pid, signal.SIGKILL)
            eventually(lambda: worker.ready and runner.plane.worker_pids() and
                       runner.plane.worker_pids()[0] != pid, timeout=10)  # noqa: B023
        assert worker.restarts == 1
    finally:
        runner.close()


def test_counters_survive_a_worker_that_dies(echoes):
    """Summed counters never go backwards: a killed worker's counts stay in the totals."""
    port = free_port()
    runner = PlaneRunner(workers=1, access_log="off")
    series = ('kgw_l7_requests_total{backend="infra/v1:8080",code="200",gateway="infra/gw",'
              'listener="l",route="infra/*"}')
    try:
        runner.apply(L7Config((Listener("l", "127.0.0.1", port,
                                        virtual_hosts=(simple_vhost("*", echoes["v1"]),)),), 1))
        for _ in range(10):
            assert request(port, "/").status == 200
        assert f"{series} 10.0" in runner.metrics()
        pid = runner.plane.worker_pids()[0]
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: runner.plane.worker_pids() and runner.plane.worker_pids()[0] != pid,
                   timeout=10)
        eventually(lambda: request(port, "/").status == 200, timeout=10)
        for _ in range(2):
            assert request(port, "/").status == 200
        assert f"{series} 13.0" in runner.metrics()
        assert "kgw_l7_connections_total 13.0" in runner.metrics()
    finally:
        runner.close()
