"""Observability end to end, in a private host (tests/netns.py): a real Prometheus (Debian's
``prometheus``) scrapes ``kgw run``'s admin address and answers PromQL over its HTTP API;
the Grafana dashboard in deploy/grafana asks only for metrics kgw exports, in PromQL that
Prometheus accepts; kgw-inspect shows the userspace L4 plane; served certificates report
their expiry, and one that expires while kgw runs turns into a warning in its listener's
status, while it is still served.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, condition, eventually, find, http_get
from tests.netns import Host, kgw_argv
from tests.translate.tlsgen import self_signed

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
PROM = "http://127.0.0.1:9090"
DASHBOARD = ROOT / "deploy" / "grafana" / "kgw.json"

HEAD = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: kgw}
spec: {controllerName: kgw.dev/gateway-controller}
"""


def service(name: str, port: int, backend_port: int) -> str:
    return f"""\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: test}}
spec: {{ports: [{{name: p, port: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: test, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: p, port: {backend_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""


HTTP_CONFIG = HEAD + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: test}
spec:
  gatewayClassName: kgw
  listeners: [{name: http, protocol: HTTP, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: test}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
""" + service("web", 80, 9101)

TCP_CONFIG = HEAD + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: l4, namespace: test}
spec:
  gatewayClassName: kgw
  listeners: [{name: db, protocol: TCP, port: 5000, allowedRoutes: {kinds: [{kind: TCPRoute}]}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: raw, namespace: test}
spec:
  parentRefs: [{name: l4}]
  rules: [{backendRefs: [{name: tcp, port: 7000}]}]
""" + service("tcp", 7000, 9200)


def start_kgw(host: Host, tmp_path: Path, config: str, *flags: str) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gw.yaml").write_text(config)
    log = (tmp_path / "kgw.log").open("w")
    host.popen(kgw_argv("run", "-c", str(conf), *flags), stdout=subprocess.DEVNULL, stderr=log)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)


# ----------------------------------------------------------------------------- Prometheus


@contextmanager
def prometheus(host: Host, tmp_path: Path) -> Iterator[Callable[[str], list[dict]]]:
    """Prometheus in the host, scraping kgw's admin address every second; yields a
    function running an instant PromQL query through the HTTP API."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("needs Prometheus (Debian's prometheus package; scripts/setup.sh installs it)")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                   "scrape_configs:\n- job_name: kgw\n  static_configs: [{targets: "
                   "['127.0.0.1:9095']}]\n")
    log = (tmp_path / "prometheus.log").open("w")
    host.popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                "--web.listen-address=127.0.0.1:9090"], stdout=log, stderr=subprocess.STDOUT)
    eventually(lambda: host.call(http_get, f"{PROM}/-/ready")[0] == 200, timeout=30)

    def query(expr: str) -> list[dict]:
        url = f"{PROM}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        code, body = host.call(http_get, url)
        answer = json.loads(body)
        assert code == 200 and answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    yield query


def value(result: list[dict]) -> float | None:
    """The value of a one-series instant vector (None when empty)."""
    return float(result[0]["value"][1]) if result else None


def exported(host: Host) -> set[str]:
    """Every series name kgw's /metrics can have (a counter's with _total, a histogram's
    buckets, ...), from the families it declares."""
    code, body = host.call(http_get, f"{ADMIN}/metrics")
    assert code == 200
    names = set()
    suffixes = {"counter": ("_total", "_created"),
                "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created")}
    for fam in text_string_to_metric_families(body.decode()):
        names.add(fam.name)
        names.update(fam.name + s for s in suffixes.get(fam.type, ()))
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_prometheus_counts_requests_per_route_and_runs_the_dashboard(host: Host,
                                                                     tmp_path: Path) -> None:
    """`kgw run -c DIR`, every flag at its default; N requests on route test/web; Prometheus's
    PromQL says N. Then every expression of the Grafana dashboard names only metrics this
    kgw exports, and Prometheus evaluates it without error."""
    host.popen(kgw_argv("echo", "--port", "9101", "--pod", "web-1", "--namespace", "test"),
               stdout=subprocess.DEVNULL)
    start_kgw(host, tmp_path, HTTP_CONFIG)
    n = 25

    def get() -> int:
        req = urllib.request.Request("http://127.0.0.1:8080/", headers={"Host": "web.example.com"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
            return resp.status

    eventually(lambda: host.call(get) == 200, timeout=15)
    for _ in range(n - 1):
        assert host.call(get) == 200
    with prometheus(host, tmp_path) as query:
        expr = 'sum(kgw_l7_requests_total{route="test/web",gateway="test/gw",code="200"})'
        got = eventually(lambda: value(query(expr)) == n and value(query(expr)), timeout=30)
        assert got == n
        by_code = query('sum by (code) (kgw_l7_requests_total{route="test/web"})')
        assert {r["metric"]["code"]: float(r["value"][1]) for r in by_code} == {"200": n}

        names = exported(host)
        for e in dashboard_exprs():
            used = set(re.findall(r"\bkgw_[a-z0-9_]+", e))
            assert used, e
            assert used <= names, (e, used - names)
            # Grafana's variables as it would fill them in
            concrete = e.replace("$__rate_interval", "1m").replace("$gateway", ".*")
            query(concrete)  # asserts Prometheus accepted and ran it


def test_prometheus_counts_l4_frontend_flows_and_inspect_reads_userspace(host: Host,
                                                                         tmp_path: Path) -> None:
    """`kgw run --l4-mode userspace` (what `auto` falls back to without root or bcc): M
    connections through a TCPRoute; Prometheus counts M flows and their bytes each way for
    that route, and kgw-inspect shows the frontend, its backend and an open flow (it used
    to say that no maps were pinned)."""
    host.popen(kgw_argv("echo", "--tcp-port", "9200", "--pod", "tcp-1", "--namespace", "test"),
               stdout=subprocess.DEVNULL)
    start_kgw(host, tmp_path, TCP_CONFIG, "--l4-mode", "userspace")
    welcome = b"Gateway API Test TCP Server\n"
    m = 7

    def ping(hold: bool = False) -> socket.socket | None:
        s = socket.create_connection(("127.0.0.1", 5000), timeout=5)
        f = s.makefile("rb")
        assert f.readline() == welcome
        s.sendall(b"PING\n")
        assert f.readline() == b"PONG\n"
        f.close()
        if hold:
            return s
        s.close()
        return None

    eventually(lambda: host.call(ping) is None, timeout=15)
    for _ in range(m - 1):
        host.call(ping)
    with prometheus(host, tmp_path) as query:
        sel = 'gateway="test/l4",listener="db",route="test/raw"'
        flows = f"sum(kgw_l4_frontend_flows_total{{{sel}}})"
        assert eventually(lambda: value(query(flows)) == m, timeout=30)
        up = value(query(f'sum(kgw_l4_frontend_bytes_total{{{sel},direction="to_backend"}})'))
        down = value(query(f'sum(kgw_l4_frontend_bytes_total{{{sel},direction="to_client"}})'))
        assert (up, down) == (m * len(b"PING\n"), m * (len(welcome) + len(b"PONG\n")))
        backend = query('sum by (backend, endpoint) (kgw_l4_backend_flows_total)')
        assert [(r["metric"], float(r["value"][1])) for r in backend] == [
            ({"backend": "test/tcp:7000", "endpoint": "127.0.0.1:9200"}, m)]
        assert value(query('kgw_l4_mode{mode="userspace"}')) == 1

    held = host.call(ping, True)
    try:
        def inspect(*args: str) -> Any:
            r = host.run(*_inspect_argv("-o", "json", *args))
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        fe, = inspect("frontends")
        assert (fe["name"], fe["frontend"], fe["route"], fe["flows"]) == ("test/l4/db",
                                                                          "0.0.0.0:5000/TCP",
                                                                           "test/raw", m + 1)
        assert [b["endpoint"] for b in fe["backends"]] == ["127.0.0.1:9200"]
        client = "127.0.0.1:%d" % held.getsockname()[1]
        flow, = inspect("flows", "--src", client)
        assert flow["backend"] == "127.0.0.1:9200" and flow["bytes_to_backend"] == len(b"PING\n")
    finally:
        held.close()


def _inspect_argv(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("kgw-inspect")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "kgw_l4.inspect", *args]


# ----------------------------------------------------------------------------- certificates


def https_config(old: tuple[str, str], soon: tuple[str, str]) -> str:
    def secret(name: str, pair: tuple[str, str]) -> str:
        b64 = [base64.b64encode(p.encode()).decode() for p in pair]
        return (f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: test}}\n"
                f"type: kubernetes.io/tls\ndata: {{tls.crt: {b64[0]}, tls.key: {b64[1]}}}\n")

    return HEAD + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tls, namespace: test}
spec:
  gatewayClassName: kgw
  listeners:
  - {name: old, protocol: HTTPS, port: 8443, hostname: old.example.com, tls: {certificateRefs: [{name: old}]}}
  - {name: soon, protocol: HTTPS, port: 8443, hostname: soon.example.com, tls: {certificateRefs: [{name: soon}]}}
""" + secret("old", old) + secret("soon", soon)  # noqa: E501 (data)


def test_certificate_expiry_metrics_and_status_warning_while_still_served(host: Host,
                                                                          tmp_path: Path) -> None:
    """An expired certificate: its expiry on /metrics, a warning in its listener's
    ResolvedRefs message, Programmed still True, and the TLS handshake still gets it.
    A certificate that expires while kgw runs gets the same warning then, with no change
    to the configuration."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    old = self_signed("old.example.com", ("old.example.com",), now - datetime.timedelta(days=30),
                      now - datetime.timedelta(days=1))
    soon_after = now + datetime.timedelta(seconds=8)
    soon = self_signed("soon.example.com", ("soon.example.com",), now - datetime.timedelta(days=1),
                       soon_after)
    start_kgw(host, tmp_path, https_config(old, soon))

    def listener(name: str) -> dict[str, dict]:
        status = json.loads(host.call(http_get, f"{ADMIN}/status")[1])
        gw = find(status, "Gateway", "tls", "test")
        lis = next(x for x in gw["status"]["listeners"] if x["name"] == name)
        return {t: condition(lis["conditions"], t) for t in ("ResolvedRefs", "Programmed")}

    conds = listener("old")
    assert conds["Programmed"]["status"] == "True" and conds["ResolvedRefs"]["status"] == "True"
    assert "Secret test/old expired at" in conds["ResolvedRefs"]["message"], conds
    assert "still served" in conds["ResolvedRefs"]["message"]
    assert "warning" not in listener("soon")["ResolvedRefs"]["message"]

    code, body = host.call(http_get, f"{ADMIN}/metrics")
    expiry = {s.labels["listener"]: s.value for f in text_string_to_metric_families(body.decode())
              if f.name == "kgw_tls_certificate_expiry_timestamp_seconds" for s in f.samples}
    assert expiry == {"old": (now - datetime.timedelta(days=1)).timestamp(),
                      "soon": soon_after.timestamp()}

    def served(name: str) -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", 8443), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as tls:
                return tls.getpeercert(binary_form=True) or b""

    assert eventually(lambda: host.call(served, "old.example.com"),
                      timeout=15) == ssl.PEM_cert_to_DER_cert(old[0])
    # no configuration change: the warning comes when the certificate expires
    wait = soon_after.timestamp() - time.time()
    assert wait > 0, "kgw took too long to start for this test's certificate"
    msg = eventually(lambda: (m := listener("soon")["ResolvedRefs"]["message"]) and "expired" in m
                     and m, timeout=wait + 15)
    assert "Secret test/soon expired at" in msg
    assert listener("soon")["Programmed"]["status"] == "True"
    assert host.call(served, "soon.example.com") == ssl.PEM_cert_to_DER_cert(soon[0])
