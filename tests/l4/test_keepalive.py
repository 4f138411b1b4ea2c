"""TCP keepalive of the L4 proxies' accepted connections with the defaults a user gets
(kgw_l4.acceptor.KEEPALIVE_IDLE): the kernel's view of the gateway's side of a TCPRoute
connection (asyncio server) and of a TLS passthrough one (kgw_l4.acceptor), as `ss`
shows it. vm_tests/test_tlspass.py shows a vanished client dropped by it."""

from __future__ import annotations

import asyncio
import re
import subprocess

from kgw_l4.acceptor import KEEPALIVE_IDLE
from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config, SNIRoute, TLSPassthrough
from kgw_l4.plane import open_plane
from tests.helpers import free_port
from tests.l4.test_l4_metrics import _echo
from tests.l4.tlshelp import client_hello


def keepalive_timer(port: int) -> str:
    """The timer `ss` shows on the established socket whose local port is ``port`` (the
    gateway's accepted side), e.g. ``keepalive,4min59sec,0``."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    m = re.search(r"timer:\(([^)]*)\)", out)
    return m.group(1) if m else out


async def test_accepted_connections_have_keepalive_by_default() -> None:
    be = await asyncio.start_server(_echo, "127.0.0.1", 0)
    be_port = be.sockets[0].getsockname()[1]
    group = (BackendGroup("ns/b:1", 1, (Endpoint("127.0.0.1", be_port),)),)
    tcp, tls = free_port(), free_port()
    plane = await open_plane("userspace")  # (no keepalive argument: the default)
    try:
        await plane.apply(L4Config(
            frontends=(Frontend("ns/tcp", "127.0.0.1", tcp, "TCP", group),),
            tls_passthrough=(TLSPassthrough("tls", "127.0.0.1", tls, (
                SNIRoute("ns/web", ("a.example.com",), group),)),)))
        for port, first in ((tcp, b"x"), (tls, client_hello("a.example.com"))):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(first)
            assert await r.readexactly(len(first)) == first
            timer = keepalive_timer(port)
            assert timer.startswith("keepalive,"), (port, timer)
            minutes = int(re.match(r"keepalive,(\d+)min", timer).group(1))  # type: ignore[union-attr]
            assert KEEPALIVE_IDLE // 60 - 1 <= minutes <= KEEPALIVE_IDLE // 60, timer
            w.close()
    finally:
        await plane.close()
        be.close()
