"""Health checks of TLS routes' backends (kgw_l4.health, kgw_l4.tlspass) with real
sockets and real TLS: a route's endpoint whose port is closed is found down within
interval x threshold and gets no new connection (passed through and terminated alike),
it comes back when it listens again, and every endpoint down keeps them all (logged)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

import pytest

from kgw_l4 import health as l4health
from kgw_l4.config import (
    BackendGroup, Endpoint, L4Config, ServingCert, SNIRoute, Termination, TLSPassthrough,
)
from kgw_l4.plane import UserspacePlane
from kgw_l7.config import HealthCheck
from tests.l4.test_userspace import free_port
from tests.l4.tlshelp import make_cert

CHECK = HealthCheck(type="TCP", interval=0.1, timeout=0.1, unhealthy_threshold=2)


def _ctx(tmp_path, name: str) -> ssl.SSLContext:
    cert, key = make_cert(tmp_path, name)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def _named(name: str, port: int, ctx: ssl.SSLContext | None) -> asyncio.Server:
    """A server on 127.0.0.1:port (TLS with ``ctx``) that says ``name`` and closes."""
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(name.encode() + b"\n")
        await w.drain()
        w.close()
    return await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx, reuse_address=True)


async def _whom(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                         server_hostname="app.example.com")
    try:
        return (await r.readline()).decode().strip()
    finally:
        w.close()


def _config(port: int, group: BackendGroup, terminate: Termination | None) -> L4Config:
    return L4Config(tls_passthrough=(TLSPassthrough("ns/gw/tls", "127.0.0.1", port, (
        SNIRoute("ns/app", ("app.example.com",), (group,), "ns/gw", "tls", terminate),)),))


def test_targets_take_tls_routes_groups_with_a_check():
    checked = BackendGroup("g", 1, (Endpoint("10.0.0.1", 443), Endpoint("10.0.0.2", 443)), CHECK)
    plain = BackendGroup("h", 1, (Endpoint("10.0.0.3", 443),))
    cfg = L4Config(tls_passthrough=(TLSPassthrough("t", "0.0.0.0", 443, (
        SNIRoute("r", ("a.example.com",), (checked, plain)),)),))
    assert sorted(l4health.targets(cfg)) == [("g", "10.0.0.1", 443), ("g", "10.0.0.2", 443)]


@pytest.mark.parametrize("mode", ["passthrough", "terminate"])
async def test_a_dead_tls_backend_gets_no_new_connection_and_comes_back(tmp_path, mode):
    """Passthrough: the backends speak TLS (kgw routes by the SNI and copies the bytes);
    terminate: kgw's certificate, plain TCP to the backends."""
    port, p1, p2 = free_port(), free_port(), free_port()
    terminate = None
    backend_ctx: ssl.SSLContext | None = _ctx(tmp_path, "app.example.com")
    if mode == "terminate":
        cert, key = make_cert(tmp_path, "gw.example.com")
        terminate = Termination((ServingCert(("*",), cert.read_text(), key.read_text()),))
        backend_ctx = None
    one = await _named("one", p1, backend_ctx)
    group = BackendGroup("ns/app:443", 1, (Endpoint("127.0.0.1", p1), Endpoint("127.0.0.1", p2)),
                         CHECK)
    plane = UserspacePlane()
    await plane.apply(_config(port, group, terminate))
    two = None
    try:
        assert plane.errors() == {}
        start = time.monotonic()
        # p2 is closed: down after two failed probes (the first within an interval)
        while plane.health.down() != {("ns/app:443", "127.0.0.1", p2)}:
            assert time.monotonic() - start < 2.0, plane.health.view()
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # (the pickers are rebuilt in a thread)
        got = [await _whom(port) for _ in range(30)]
        assert set(got) == {"one"}, got
        view = {e["endpoint"]: e["health"] for e in plane.health.view()}
        assert view == {f"127.0.0.1:{p1}": "healthy", f"127.0.0.1:{p2}": "unhealthy"}
        drops = sum(sum(f.drops.values()) for f in plane.stats().frontends)
        assert drops == 0  # no connection was sent to the dead one

        two = await _named("two", p2, backend_ctx)
        while True:
            got = [await _whom(port) for _ in range(30)]
            if set(got) == {"one", "two"}:
                break
            assert time.monotonic() - start < 5.0, (got, plane.health.view())
            await asyncio.sleep(0.05)
    finally:
        await plane.close()
        one.close()
        if two is not None:
            two.close()


async def test_every_tls_endpoint_down_keeps_them_all(caplog):
    port, dead = free_port(), free_port()
    group = BackendGroup("g", 1, (Endpoint("127.0.0.1", dead),), CHECK)
    plane = UserspacePlane()
    caplog.set_level(logging.WARNING, logger="kgw.l4.tls")
    await plane.apply(_config(port, group, None))
    try:
        start = time.monotonic()
        while "every endpoint fails its health check" not in caplog.text:
            assert time.monotonic() - start < 2.0, plane.health.view()
            await asyncio.sleep(0.02)
        [pick] = plane.tls._pickers.values()
        assert pick.panic and pick.choose(("127.0.0.1", 1), ("127.0.0.1", port)) == (
            "127.0.0.1", dead)
    finally:
        await plane.close()
