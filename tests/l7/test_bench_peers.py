"""The L7 benchmark compares like with like: nginx and haproxy, as bench/l7/run.py
configures them, forward the same request fields kgw does, so the backend does the same
work and answers the same body for each proxy (a CPU-per-request ratio means nothing
otherwise). Needs the Debian nginx and haproxy (``scripts/setup.sh bench``)."""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.l7 import run as bench

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") and shutil.which("haproxy")),
    reason="nginx and haproxy not installed (scripts/setup.sh bench)")

#: Fields that a proxy sets itself (compared by presence; their values differ by design).
OWN = {"X-Request-Id"}


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    tmp: Path = tmp_path_factory.mktemp("peers")
    echo_port = bench.free_port()
    backend = bench.start_backend("echo", echo_port, tmp)
    started: list[Any] = []
    try:
        bench.wait_port(echo_port)
        started.append(bench.Kgw(bench.free_port(), echo_port))
        started.append(bench.start_nginx(bench.free_port(), echo_port, tmp))
        started.append(bench.start_haproxy(bench.free_port(), echo_port, tmp))
        yield {name: p.port for name, p in zip(("kgw", "nginx", "haproxy"), started)}
    finally:
        for p in started:
            p.stop()
        backend.terminate()
        backend.wait(10)


def seen(port: int, route: str, extra: dict[str, str]) -> dict[str, Any]:
    """What the echo backend reports it received through the proxy on ``port``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", f"/{route}", headers={"X-Bench": "yes", **extra})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (port, route, resp.status, body)
        return json.loads(body)
    finally:
        conn.close()


def fields(report: dict[str, Any]) -> dict[str, list[str]]:
    # haproxy adds X-Forwarded-For as a second field line; the value list is the same.
    return {name: [v.strip() for value in values for v in value.split(",")]
            for name, values in report["headers"].items()}


@pytest.mark.parametrize("route", ["plain", "hdr"])
def test_peers_forward_what_kgw_forwards(proxies: dict[str, int], route: str) -> None:
    reports = {name: seen(port, route, {}) for name, port in proxies.items()}
    want = reports["kgw"]
    assert {"X-Request-Id", "X-Forwarded-For", "X-Forwarded-Proto"} <= set(want["headers"])
    for name, got in reports.items():
        assert got["host"] == f"127.0.0.1:{proxies[name]}", name  # Host as the client sent it
        assert set(got["headers"]) == set(want["headers"]), name
        mine, theirs = fields(want), fields(got)
        for field in set(mine) - OWN:
            assert theirs[field] == mine[field], (name, field)


def test_peers_keep_the_clients_request_id(proxies: dict[str, int]) -> None:
    extra = {"X-Request-Id": "given-1", "X-Forwarded-For": "10.0.0.1"}
    for name, port in proxies.items():
        got = fields(seen(port, "plain", extra))
        assert got["X-Request-Id"] == ["given-1"], name
        assert got["X-Forwarded-For"] == ["10.0.0.1", "127.0.0.1"], name
        assert got["X-Forwarded-Proto"] == ["http"], name


def test_same_body_size_from_the_backend(proxies: dict[str, int]) -> None:
    """The backend's answer is the same length whichever proxy asked (the request id
    values differ in form, not in what is echoed around them)."""
    sizes = {}
    for name, port in proxies.items():
        report = seen(port, "plain", {"X-Request-Id": "given-1"})
        report.pop("host")
        sizes[name] = len(json.dumps(report, sort_keys=True))
    assert len(set(sizes.values())) == 1, sizes



def test_peers_make_a_new_request_id_per_request(proxies: dict[str, int]) -> None:
    for name, port in proxies.items():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        ids = []
        try:
            for _ in range(3):  # one keep-alive connection
                conn.request("GET", "/plain", headers={"X-Bench": "yes"})
                resp = conn.getresponse()
                ids.append(json.loads(resp.read())["headers"]["X-Request-Id"][0])
        finally:
            conn.close()
        assert len(set(ids)) == 3 and all(ids), (name, ids)
