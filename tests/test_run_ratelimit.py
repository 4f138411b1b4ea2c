"""`kgw run` with every default (one worker per CPU, SO_REUSEPORT) enforces a local rate
limit for the whole node: N requests per second hold within 10% over 10 s whatever worker
a connection lands on, from several client addresses; per-client keys keep clients apart;
a 429 says when to retry (Retry-After, RateLimit-Policy, RateLimit); an edit of the
policy takes effect on open connections without closing them; /metrics counts it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
#: search: 50 per second for everyone together (burst 5); store: 2 per second per client.
POLICIES = """\
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: search-rate, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: search}]
  rateLimit:
    local:
      tokenBucket: {maxTokens: 5, tokensPerFill: RATE, fillInterval: 1s}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: store-per-client, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: store}]
  rateLimit:
    local:
      tokenBucket: {maxTokens: 2, tokensPerFill: 2, fillInterval: 1s}
      key: {type: ClientIP}
"""


class Client:
    """One keep-alive HTTP/1.1 connection from a chosen source address."""

    def __init__(self, source: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", 8080), timeout=10,
                                             source_address=(source, 0))
        self.buf = b""

    def get(self, path: str) -> tuple[int, dict[str, str]]:
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: shop.example.com\r\n\r\n" % path.encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the gateway")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(fields.get("content-length", "0"))
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the gateway")
            self.buf += chunk
        self.buf = self.buf[length:]
        return int(lines[0].split()[1]), fields

    def close(self) -> None:
        self.sock.close()


def hammer(path: str, sources: list[str], seconds: float, per_second: float) -> dict[int, int]:
    """Requests from every source (two connections each), paced at ``per_second`` in all,
    for ``seconds``: the count of each status."""
    counts: dict[int, int] = {}
    lock = threading.Lock()
    conns = [Client(s) for s in sources for _ in range(2)]
    gap = len(conns) / per_second
    end = time.monotonic() + seconds

    def run(c: Client) -> None:
        nxt = time.monotonic()
        while time.monotonic() < end:
            code, _ = c.get(path)
            with lock:
                counts[code] = counts.get(code, 0) + 1
            nxt += gap
            time.sleep(max(0.0, nxt - time.monotonic()))

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    return counts


def rate_limited_metric() -> dict[str, float]:
    code, body = http_get(f"{ADMIN}/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        if fam.name == "kgw_l7_rate_limited":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels["route"]] = s.value
    return out


def test_local_rate_limit_holds_for_the_node(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    (conf / "policies.yaml").write_text(POLICIES.replace("RATE", "50"))
    for name, port in (("store-v1", 9101), ("store-v2", 9102), ("search", 9103)):
        host.popen(kgw_argv("echo", "--port", str(port), "--pod", f"{name}-x", "--namespace",
                            "demo"), stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    sources = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]

    def first(path: str, source: str) -> tuple[int, dict[str, str]]:
        c = Client(source)
        try:
            return c.get(path)
        finally:
            c.close()

    eventually(lambda: host.call(first, "/search", "127.0.0.9")[0] == 200)
    time.sleep(1.0)  # the bucket full again

    # 1. The route-wide limit, over 10 s, offered at 4x the limit from 4 addresses.
    counts = host.call(hammer, "/search", sources, 10.0, 200.0)
    allowed = counts.get(200, 0)
    assert set(counts) <= {200, 429}, counts
    expected = 50 * 10 + 5
    assert expected * 0.9 <= allowed <= expected * 1.1, counts

    # 2. A 429 says when to come back.
    c = host.call(Client, "127.0.0.6")
    got = [host.call(c.get, "/search") for _ in range(20)]
    code, fields = next(g for g in got if g[0] == 429)
    assert int(fields["retry-after"]) >= 1
    assert fields["ratelimit-policy"] == '"local";q=50;w=1'
    assert fields["ratelimit"].startswith('"local";r=0;t=')

    # 3. Per-client buckets: one client spending its own does not touch another's.
    # (eight connections: spread over the workers, which share the client's bucket)
    busy = host.call(hammer, "/store", ["127.0.0.7"] * 4, 3.0, 40.0)
    assert busy.get(429, 0) > 0 and busy.get(200, 0) <= 2 + 2 * 3 + 1, busy
    assert host.call(first, "/store", "127.0.0.8")[0] == 200

    # 4. /metrics counts the refusals by route.
    limited = host.call(rate_limited_metric)
    assert limited.get("demo/search", 0) >= counts.get(429, 0)
    assert limited.get("demo/store", 0) >= busy.get(429, 0)

    # 5. An edit applies to open connections, which stay open.
    for _ in range(10):
        host.call(c.get, "/search")  # spend the bucket
    (conf / "policies.yaml").write_text(POLICIES.replace("RATE", "1000").replace(
        "maxTokens: 5", "maxTokens: 1000"))

    def burst_passes() -> bool:
        return all(host.call(c.get, "/search")[0] == 200 for _ in range(30))

    eventually(burst_passes, timeout=15)
    host.call(c.close)
