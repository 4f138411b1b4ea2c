"""The userspace fallback proxy on loopback: integrity, half-close, weights, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from kgw_l4.config import BackendGroup, Endpoint, Frontend, L4Config
from kgw_l4.plane import open_plane
from kgw_l4.userspace import UserspaceProxy
from tests.helpers import free_port


async def echo_server(tag: bytes):
    async def handle(r, w):
        w.write(tag + b"\n")
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
        w.write_eof()
        await w.drain()
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


def fe(port, groups, name="fe"):
    return Frontend(name, "127.0.0.1", port, "TCP", tuple(
        BackendGroup(n, w, tuple(Endpoint("127.0.0.1", p) for p in ports))
        for n, w, ports in groups))


async def test_integrity_and_half_close():
    srv, bport = await echo_server(b"A")
    proxy = UserspaceProxy()
    port = free_port()
    await proxy.apply(L4Config((fe(port, [("a", 1, [bport])]),)))
    assert proxy.errors == {}
    r, w = await asyncio.open_connection("127.0.0.1", port)
    assert await r.readline() == b"A\n"
    payload = os.urandom(4 * 1024 * 1024)

    async def send():
        w.write(payload)
        await w.drain()
        w.write_eof()  # half-close: the echo must still come back in full

    sender = asyncio.create_task(send())
    got = await r.read(-1)
    await sender
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    w.close()
    await proxy.close()
    srv.close()


async def test_weights_and_drain():
    srv_a, pa = await echo_server(b"a")
    srv_b, pb = await echo_server(b"b")
    proxy = UserspaceProxy()
    port = free_port()
    await proxy.apply(L4Config((fe(port, [("a", 1, [pa]), ("b", 3, [pb])]),)))
    seen = {"a": 0, "b": 0}
    for _ in range(200):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        seen[(await r.readline()).decode().strip()] += 1
        w.close()
    assert abs(seen["a"] / 200 - 0.25) < 0.1
    await proxy.apply(L4Config((fe(port, [("a", 0, [pa]), ("b", 1, [pb])]),)))
    for _ in range(20):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await r.readline() == b"b\n"
        w.close()
    await proxy.close()
    srv_a.close()
    srv_b.close()


async def test_errors_port_clash_and_bind_failure():
    srv, bport = await echo_server(b"x")
    port = free_port()
    proxy = UserspaceProxy()
    await proxy.apply(L4Config((
        fe(port, [("a", 1, [bport])], "one"), fe(port, [("a", 1, [bport])], "two"),
        fe(free_port(), [], "empty"),
        fe(bport, [("a", 1, [bport])], "taken"),  # the echo server holds that port
        Frontend("udp", "127.0.0.1", 5353, "UDP", ()),
    )))
    assert "port clash" in proxy.errors["two"]
    assert proxy.errors["empty"] == "no backends"
    assert "cannot listen" in proxy.errors["taken"]
    assert "kernel data plane" in proxy.errors["udp"]
    assert "one" not in proxy.errors
    await proxy.close()
    srv.close()


async def test_open_plane_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown L4 mode"):
        await open_plane("warp")
    with pytest.raises(ValueError, match="not an IPv4"):
        await open_plane("userspace", node_address="nope")


async def test_userspace_plane_via_open_plane():
    plane = await open_plane("userspace")
    assert plane.mode == "userspace"
    await plane.apply(L4Config())
    assert plane.errors() == {}
    await plane.close()


async def test_auto_falls_back_with_one_clear_line(monkeypatch, caplog):
    from kgw_l4 import loader as ld

    monkeypatch.setattr(ld, "unavailable_reason", lambda: "not running as root")
    caplog.set_level("INFO")
    plane = await open_plane("auto")
    assert plane.mode == "userspace"
    lines = [r.message for r in caplog.records if "userspace L4 proxy" in r.message]
    assert lines == [
        "kernel L4 data plane unavailable (not running as root): using the userspace L4 proxy"]
    with pytest.raises(ld.BpfUnavailable, match="not running as root"):
        await open_plane("tc")
    await plane.close()


async def test_kernel_plane_compiles_nothing_for_an_empty_config(monkeypatch, tmp_path):
    from kgw_l4 import loader as ld

    monkeypatch.setattr(ld, "unavailable_reason", lambda: None)

    def boom(self, name):
        raise AssertionError("compiled BPF for an empty config")

    monkeypatch.setattr(ld.Loader, "load", boom)
    plane = await open_plane("tc", interfaces=["lo"], pin_dir=str(tmp_path / "pins"))
    assert plane.mode == "tc"
    await plane.apply(L4Config())
    assert plane.errors() == {}
    await plane.close()
    with pytest.raises(ValueError, match="unknown interface 'nope0'"):
        await open_plane("tc", interfaces=["nope0"], pin_dir=str(tmp_path / "pins"))


async def test_kernel_plane_start_failure_is_reported(monkeypatch, tmp_path):
    from kgw_l4 import loader as ld

    monkeypatch.setattr(ld, "unavailable_reason", lambda: None)

    def fail(self, name):
        raise ld.BpfUnavailable("compiler exploded")

    monkeypatch.setattr(ld.Loader, "load", fail)
    plane = await open_plane("tc", interfaces=["lo"], pin_dir=str(tmp_path / "pins"))
    await plane.apply(L4Config((fe(8080, [("a", 1, [9000])]),)))
    assert plane.errors() == {"fe": "kernel data plane failed to start: compiler exploded"}
    await plane.close()


async def test_kernel_plane_refuses_a_loopback_node_address(monkeypatch, tmp_path):
    from kgw_l4 import loader as ld

    monkeypatch.setattr(ld, "unavailable_reason", lambda: None)
    with pytest.raises(ValueError, match="loopback address"):
        await open_plane("tc", interfaces=["lo"], node_address="127.0.0.1",
                         pin_dir=str(tmp_path / "pins"))
    plane = await open_plane("userspace", node_address="127.0.0.1")  # nothing is NATed there
    await plane.close()


async def test_pins_are_locked_only_when_used(monkeypatch, tmp_path):
    """Instances without L4 listeners share a machine (and leave no directory behind); one
    that finds pins owns them at once; one that needs them while another holds them
    reports its listeners instead of touching anything."""
    import subprocess
    import sys

    from kgw_l4 import loader as ld, pinlock
    from tests.l4.test_pinlock import HOLD

    monkeypatch.setattr(ld, "unavailable_reason", lambda: None)

    def boom(self, name):
        raise AssertionError("compiled BPF while another instance holds the pins")

    monkeypatch.setattr(ld.Loader, "load", boom)
    pins = tmp_path / "pins"
    a = await open_plane("tc", interfaces=["lo"], pin_dir=str(pins))
    b = await open_plane("tc", interfaces=["lo"], pin_dir=str(pins))
    await a.apply(L4Config())
    await b.apply(L4Config())
    assert not pins.exists()
    await a.close()
    await b.close()

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(pins)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        plane = await open_plane("tc", interfaces=["lo"], pin_dir=str(pins))  # nothing pinned yet
        await plane.apply(L4Config((fe(8080, [("a", 1, [9000])]),)))
        assert plane.errors() == {"fe": pinlock.busy_message(str(pins), holder.pid)}
        await plane.close()
        (pins / "kgw_ct").touch()  # what a running instance has pinned
        with pytest.raises(pinlock.PinDirBusy, match=f"PID {holder.pid}"):
            await open_plane("tc", interfaces=["lo"], pin_dir=str(pins))
        with pytest.raises(pinlock.PinDirBusy, match=f"PID {holder.pid}"):
            await open_plane("splice", pin_dir=str(pins))
    finally:
        holder.kill()
        holder.wait(10)
