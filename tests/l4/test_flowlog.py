"""L4 flow events in the access log (kgw_l4.flowlog), from the userspace TCP and UDP
proxies on loopback: an open and a close line per flow with its bytes each way, a
refused line with Envoy's response flag, the same JSON fields as the L7 lines, and the
text format's operators."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.flowlog import FlowLog
from kgw_l4.udp import UdpProxy
from kgw_l4.userspace import UserspaceProxy
from kgw_l7.logformat import JSON_FIELDS
from tests.l4.test_userspace import echo_server, free_port


def frontend(port: int, backend_ports: list[int], protocol: str = "TCP",
             weight: int = 1) -> Frontend:
    return Frontend("test/gw/l4", "127.0.0.1", port, protocol,  # type: ignore[arg-type]
                    (BackendGroup("test/echo:3000", weight,
                                  tuple(Endpoint("127.0.0.1", p) for p in backend_ports)),),
                    gateway="test/gw", listener="l4", route="test/route")


def lines(flog: FlowLog, path: Path) -> list[dict]:
    flog.log.close()
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_tcp_flow_open_close_and_refused(tmp_path: Path) -> None:
    srv, bport = await echo_server(b"A")
    path = tmp_path / "access.log"
    flog = FlowLog(str(path))
    proxy = UserspaceProxy()
    proxy.flow_log = flog
    port, dead = free_port(), free_port()
    await proxy.apply(L4Config((frontend(port, [bport]),)))
    r, w = await asyncio.open_connection("127.0.0.1", port)
    client = w.get_extra_info("sockname")
    assert await r.readline() == b"A\n"
    w.write(b"x" * 1000)
    w.write_eof()
    assert await r.read(-1) == b"x" * 1000
    w.close()
    for _ in range(100):  # the close line comes when both directions are done
        if not proxy.conns:
            break
        await asyncio.sleep(0.02)
    # a backend that refuses connections: one line, flag UF, no open/close pair
    await proxy.apply(L4Config((frontend(port, [dead]),)))
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    assert await r2.read(-1) == b""
    w2.close()
    for _ in range(100):
        if not proxy._tasks:
            break
        await asyncio.sleep(0.02)
    await proxy.close()
    srv.close()

    got = lines(flog, path)
    assert [g["response_code_details"] for g in got] == ["flow_open", "flow_close",
                                                         "flow_refused"]
    assert all(list(g) == [name for name, _, _ in JSON_FIELDS] for g in got)
    opened, closed, refused = got
    for g in (opened, closed):
        assert g["listener"] == "test/gw/l4"
        assert g["route_name"] == "test/route"
        assert g["upstream_host"] == f"127.0.0.1:{bport}"
        assert g["downstream_remote_address"] == f"{client[0]}:{client[1]}"
        assert g["response_code"] == 0 and g["method"] is None and g["protocol"] is None
        assert g["response_flags"] == "-"
    assert (opened["bytes_received"], opened["bytes_sent"]) == (0, 0)
    assert (closed["bytes_received"], closed["bytes_sent"]) == (1000, 1002)  # + "A\n"
    assert closed["start_time"] == opened["start_time"]
    assert closed["duration"] >= 0
    assert refused["response_flags"] == "UF"
    assert refused["upstream_host"] == f"127.0.0.1:{dead}"


async def test_errors_filter_keeps_only_refusals(tmp_path: Path) -> None:
    srv, bport = await echo_server(b"A")
    path = tmp_path / "access.log"
    flog = FlowLog(str(path), min_status=400)  # --access-log-filter errors
    proxy = UserspaceProxy()
    proxy.flow_log = flog
    port, other, dead = free_port(), free_port(), free_port()
    await proxy.apply(L4Config((frontend(port, [bport]), frontend(other, [dead]))))
    for p in (port, other):
        r, w = await asyncio.open_connection("127.0.0.1", p)
        await r.read(2)
        w.close()
    await asyncio.sleep(0.2)
    await proxy.close()
    srv.close()
    got = lines(flog, path)
    assert [(g["response_code_details"], g["response_flags"]) for g in got] == [
        ("flow_refused", "UF")]


async def test_udp_frontend_without_a_weighted_backend_refuses_with_uh(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    path = tmp_path / "access.log"
    flog = FlowLog(str(path))
    proxy = UdpProxy()
    proxy.flow_log = flog
    port = free_port()
    # (weight 0: the UDP frontend keeps its socket for the flows it has; new ones get none)
    await proxy.apply(L4Config((frontend(port, [free_port()], "UDP", weight=0),)))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    await loop.sock_sendto(client, b"ping", ("127.0.0.1", port))
    for _ in range(100):
        if any(fe.tally.drops for fe in proxy.frontends.values()):
            break
        await asyncio.sleep(0.02)
    await proxy.close()
    client.close()
    got = lines(flog, path)
    assert [(g["response_code_details"], g["response_flags"], g["upstream_host"])
            for g in got] == [("flow_refused", "UH", None)]


async def test_udp_flow_closes_with_its_bytes_when_idle(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    backend = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    backend.bind(("127.0.0.1", 0))
    backend.setblocking(False)
    bport = backend.getsockname()[1]

    async def echo() -> None:
        data, addr = await loop.sock_recvfrom(backend, 2048)
        await loop.sock_sendto(backend, data * 2, addr)

    path = tmp_path / "access.log"
    flog = FlowLog(str(path), fmt="text:%RESPONSE_CODE_DETAILS% %LISTENER_NAME% "
                                  "%BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST%")
    proxy = UdpProxy(idle_timeout=0.2)
    proxy.flow_log = flog
    port = free_port()
    await proxy.apply(L4Config((frontend(port, [bport], "UDP"),)))
    task = asyncio.create_task(echo())
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    await loop.sock_sendto(client, b"ping", ("127.0.0.1", port))
    assert await asyncio.wait_for(loop.sock_recv(client, 2048), 5) == b"pingping"
    await task
    for _ in range(100):  # expired by the sweeper
        if not any(fe.flows for fe in proxy.frontends.values()):
            break
        await asyncio.sleep(0.05)
    await proxy.close()
    client.close()
    backend.close()
    flog.log.close()
    assert path.read_text().splitlines() == [
        f"flow_open test/gw/l4 0 0 127.0.0.1:{bport}",
        f"flow_close test/gw/l4 4 8 127.0.0.1:{bport}"]


async def test_lines_lost_to_a_failing_sink_are_counted(tmp_path: Path) -> None:
    flog = FlowLog(str(tmp_path / "no" / "such" / "dir" / "access.log"))
    flow = flog.opened("test/gw/l4", "test/route", ("127.0.0.1", 1), ("127.0.0.1", 2))
    flog.closed(flow, 1, 2)
    flog.log.close()
    assert flog.log.dropped.get("write_error") == 2
    text = flog.metrics().decode()
    assert 'kgw_l4_flow_log_dropped_total{reason="write_error"} 2.0' in text
