"""The global rate limit end to end: two `kgw run` instances (two hosts, every flag at its
default) with the same TrafficPolicy ``rateLimit.global`` count in one real redis-server,
so the two together hold one limit within ±10%; Redis killed mid-run gives the configured
failure mode (Closed here: 429 for everything), and the limit comes back with Redis; an
unresolvable Redis address fails open, counted, and kgw keeps serving."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, eventually, http_get
from tests.netns import Host, kgw_argv, private_host
from tests.redis_server import REDIS_SERVER, RedisServer

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")]

ADMIN = "http://127.0.0.1:9095"
REDIS_ADDR = "10.251.0.1"
#: 20 requests per second for the two nodes together (2 every 100 ms), a burst of 2.
POLICY = """\
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: search-global, namespace: demo}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: search}}]
  rateLimit:
    global:
      tokenBucket: {{maxTokens: 2, tokensPerFill: 2, fillInterval: 100ms}}
      redis: {{address: "{address}"}}
      timeout: 200ms
      failureMode: {mode}
"""
RATE = 20


def linked_hosts(a: Host, b: Host) -> None:
    """A veth between the two hosts: a 10.251.0.1/30, b 10.251.0.2/30."""
    tag = a.name[-6:]
    subprocess.run(["ip", "link", "add", f"ra{tag}", "netns", a.name, "type", "veth", "peer",
                    "name", f"rb{tag}", "netns", b.name], check=True, capture_output=True)
    for host, dev, addr in ((a, f"ra{tag}", "10.251.0.1/30"), (b, f"rb{tag}", "10.251.0.2/30")):
        host.run("ip", "addr", "add", addr, "dev", dev)
        host.run("ip", "link", "set", dev, "up")


def start_kgw(host: Host, tmp: Path, policy: str) -> None:
    conf = tmp / f"conf-{host.name}"
    shutil.copytree(ROOT / "examples", conf)
    (conf / "policy.yaml").write_text(policy)
    host.popen(kgw_argv("echo", "--port", "9103", "--pod", "search-x", "--namespace", "demo"),
               stdout=subprocess.DEVNULL)
    host.popen(kgw_argv("run", "-c", str(conf)), stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=60)


def search(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/search", headers={"Host": "shop.example.com"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def hammer(host: Host, seconds: float, counts: dict[int, int], lock: threading.Lock) -> None:
    """Requests on one keep-alive connection, back to back, for ``seconds``."""
    def body() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", 8080, timeout=10)
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                code = search(conn)
                with lock:
                    counts[code] = counts.get(code, 0) + 1
        finally:
            conn.close()
    host.call(body)


def load(hosts: list[Host], seconds: float) -> dict[int, int]:
    counts: dict[int, int] = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=hammer, args=(h, seconds, counts, lock))
               for h in hosts for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


def metric(host: Host, name: str, **labels: str) -> float:
    code, body = host.call(http_get, f"{ADMIN}/metrics")
    assert code == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_nodes_share_one_limit_and_redis_down_fails_closed(tmp_path: Path) -> None:
    with private_host() as a, private_host() as b:
        linked_hosts(a, b)
        redis = RedisServer(tmp_path / "redis", bind=REDIS_ADDR, wrap=a.cmd(bpffs=False))
        redis.start()
        try:
            policy = POLICY.format(address=redis.address, mode="Closed")
            for h in (a, b):
                start_kgw(h, tmp_path, policy)
            eventually(lambda: all(h.call(lambda: search(
                http.client.HTTPConnection("127.0.0.1", 8080, timeout=5))) in (200, 429)
                for h in (a, b)), timeout=30)
            time.sleep(1)  # the bucket refills fully

            seconds = 5.0
            counts = load([a, b], seconds)
            expected = 2 + RATE * seconds
            assert counts.get(429, 0) > counts.get(200, 0), counts  # both nodes pushed hard
            assert abs(counts.get(200, 0) - expected) <= 0.1 * expected, (counts, expected)
            assert metric(a, "kgw_l7_global_ratelimit_decisions_total", outcome="allowed") > 0
            assert metric(b, "kgw_l7_global_ratelimit_decisions_total", outcome="allowed") > 0

            redis.stop()  # killed mid-run: Closed refuses everything
            down = load([a], 1.0)
            assert set(down) == {429}, down
            assert metric(a, "kgw_l7_global_ratelimit_decisions_total",
                          outcome="fail_closed") > 0

            redis.start()  # back (empty): the limit again, not 429 for all
            time.sleep(1.0)
            back = load([a, b], 2.0)
            assert 0 < back.get(200, 0) <= 2 + RATE * 2 * 1.1 + 2, back
        finally:
            redis.stop()


def test_unresolvable_redis_fails_open_and_kgw_keeps_serving(host: Host, tmp_path: Path) -> None:
    start_kgw(host, tmp_path, POLICY.format(address="redis.does-not-exist.invalid:6379",
                                            mode="Open"))
    got = eventually(lambda: load([host], 1.0))
    assert set(got) == {200}, got
    assert metric(host, "kgw_l7_global_ratelimit_redis_errors_total",
                  reason="unresolvable") >= 1
    assert re.search(r"kgw_l7_global_ratelimit_decisions_total\{.*outcome=\"fail_open\"",
                     host.call(http_get, f"{ADMIN}/metrics")[1].decode())


def policy_conditions(host: Host) -> dict[str, dict]:
    """The TrafficPolicy's conditions (of its one ancestor) by type, from ``/status``."""
    code, body = host.call(http_get, f"{ADMIN}/status")
    assert code == 200
    for item in json.loads(body)["items"]:
        if item["kind"] == "TrafficPolicy" and item["metadata"]["name"] == "search-global":
            (ancestor,) = item["status"]["ancestors"]
            return {c["type"]: c for c in ancestor["conditions"]}
    raise AssertionError("no status for the TrafficPolicy")


def redis_unreachable(host: Host, needle: str) -> dict | None:
    """Requests (the checks that find Redis failing), then the policy's ResolvedRefs=False
    condition if its message holds ``needle``."""
    load([host], 0.3)
    cond = policy_conditions(host).get("ResolvedRefs")
    return cond if cond is not None and needle in cond["message"] else None


def test_redis_failures_show_in_the_policy_status_until_fixed(host: Host,
                                                              tmp_path: Path) -> None:
    """What only serving finds (the Redis address does not resolve; Redis refuses) is in
    the policy's status: Accepted stays True (the policy is valid and applies, failing
    open), ResolvedRefs=False names the field, the address and the error; fixing it (a new
    address, Redis started again) clears it."""
    bad = "redis.does-not-exist.invalid:6379"
    start_kgw(host, tmp_path, POLICY.format(address=bad, mode="Open"))
    assert "ResolvedRefs" not in policy_conditions(host)  # nothing tried yet
    cond = eventually(lambda: redis_unreachable(host, bad), timeout=30)
    assert cond["status"] == "False" and cond["reason"] == "Unreachable", cond
    assert cond["message"].startswith("spec.rateLimit.global.redis.address " + bad), cond
    assert "unresolvable" in cond["message"], cond
    assert policy_conditions(host)["Accepted"]["status"] == "True"
    out = host.run(*kgw_argv("status", "-o", "table"), check=False)  # what a user runs
    assert "TrafficPolicy demo/search-global" in out.stdout, out
    assert "ResolvedRefs=False (Unreachable): spec.rateLimit.global.redis.address " + bad \
        in out.stdout, out

    redis = RedisServer(tmp_path / "redis", wrap=host.cmd(bpffs=False))
    redis.start()
    try:
        policy = tmp_path / f"conf-{host.name}" / "policy.yaml"
        policy.write_text(POLICY.format(address=redis.address, mode="Open"))  # the fix
        eventually(lambda: load([host], 0.3) and "ResolvedRefs" not in policy_conditions(host),
                   timeout=30)
        assert metric(host, "kgw_l7_global_ratelimit_decisions_total", outcome="allowed") > 0

        redis.stop()  # down: refused, in the status
        eventually(lambda: redis_unreachable(host, f"{redis.address}: refused"), timeout=30)
        redis.start()  # back: cleared
        eventually(lambda: load([host], 0.3) and "ResolvedRefs" not in policy_conditions(host),
                   timeout=30)
        assert policy_conditions(host)["Accepted"]["status"] == "True"
    finally:
        redis.stop()
