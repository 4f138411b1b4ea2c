"""The splicer's map bookkeeping against the in-memory map fake (no kernel, no bcc): what
splice() writes for two connected sockets, what spliced() and a hold's release read and
publish, and that nothing is left behind after a failed insert or a close. The bytes
moved by the verdict program are vm_tests/test_splice.py's."""

from __future__ import annotations

import errno
import os
import socket
from contextlib import ExitStack

import pytest

from kgw_l4 import abi, loader
from kgw_l4.maps import FakeMapSet, MapError
from kgw_l4.splice import Splicer, sock_cookie


class FakeLoader:
    """What Splicer needs from kgw_l4.loader.Loader, with FakeMaps for the splice maps."""

    def __init__(self, sizes: dict[str, int] | None = None) -> None:
        self.sizes = dict(abi.SIZES, **(sizes or {}))
        self.maps = FakeMapSet(loader.splice_maps(self.sizes))
        self.attached: list[tuple[str, object]] = []
        self.events_r, self.events_w = os.pipe()
        self.on_record = None

    def load(self, name: str) -> int:
        return 100

    def table(self, prog: str, name: str):
        assert prog == "sockmap"
        return self.maps.get(name)

    def attach_verdict(self, prog: str, sockhash) -> None:
        self.attached.append((prog, sockhash))

    def ring_buffer(self, prog: str, table: str, on_record):
        self.on_record = on_record
        return self.events_r, lambda: None

    def close(self) -> None:
        os.close(self.events_r)
        os.close(self.events_w)


def tcp_pair(stack: ExitStack) -> tuple[socket.socket, socket.socket]:
    """(the accepted side of a client connection, a connection to a backend): the two
    sockets the splicer gets."""
    front = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    back = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
    stack.enter_context(socket.create_connection(front.getsockname()))
    a, _ = front.accept()
    b = socket.create_connection(back.getsockname())
    stack.enter_context(back.accept()[0])
    return a, b


def entries(ld: FakeLoader, name: str) -> dict[bytes, bytes]:
    m = ld.maps.get(name)
    return {k: m.lookup(k) for k in m.keys()}


@pytest.fixture
def ld():
    f = FakeLoader()
    yield f
    f.close()


async def test_splice_records_both_sockets_by_cookie_and_close_forgets_them(ld):
    sp = Splicer(ld)
    assert ld.attached == [("sockmap", ld.maps.get("kgw_sockhash"))]
    with ExitStack() as stack:
        a, b = tcp_pair(stack)
        ka, kb = sock_cookie(a), sock_cookie(b)
        await sp.splice(a, b)
        assert entries(ld, "kgw_sockhash") == {abi.u64(ka): abi.sockhash_val(a.fileno()),
                                               abi.u64(kb): abi.sockhash_val(b.fileno())}
        peers = {abi.u64_of(k): abi.SplicePeer.from_buffer_copy(v)
                 for k, v in entries(ld, "kgw_splice_peer").items()}
        assert {k: (p.peer, p.redirected, p.passed) for k, p in peers.items()} == \
            {ka: (kb, 0, 0), kb: (ka, 0, 0)}

        # what the verdict counted is what inspect shows
        peers = ld.maps.get("kgw_splice_peer")
        peers.update(abi.u64(ka), bytes(abi.SplicePeer(peer=kb, redirected=4096)))
        (row,) = sp.spliced()
        assert (row["up_redirected"], row["down_redirected"]) == (4096, 0)
        assert not row["up_held"] and not row["down_held"]

        await sp.close()
        assert a.fileno() == -1 and b.fileno() == -1
    for name in ("kgw_sockhash", "kgw_splice_peer", "kgw_splice_hold"):
        assert entries(ld, name) == {}, name


async def test_release_publishes_what_userspace_took_from_a_held_direction(ld):
    sp = Splicer(ld)
    with ExitStack() as stack:
        a, b = tcp_pair(stack)
        ka, kb = sock_cookie(a), sock_cookie(b)
        await sp.splice(a, b)
        way = sp._conns[a.fileno()].ways[a.fileno()]
        way.read = way.written = 1000
        peers = ld.maps.get("kgw_splice_peer")
        peers.update(abi.u64(ka), bytes(abi.SplicePeer(peer=kb, passed=1500)))
        assert sp._release(way) is False  # the verdict held 500 more meanwhile
        assert entries(ld, "kgw_splice_hold") == {abi.u64(ka): abi.u64(1000)}
        way.read = way.written = 1500
        assert sp._release(way) is True
        assert entries(ld, "kgw_splice_hold") == {abi.u64(ka): abi.u64(1500)}
        await sp.close()
    assert entries(ld, "kgw_splice_hold") == {}


async def test_event_for_a_closed_socket_drops_its_hold_entry(ld):
    sp = Splicer(ld)
    ld.maps.get("kgw_splice_hold").update(abi.u64(77), abi.u64(5))
    ld.on_record(bytes(abi.SpliceEvent(cookie=77, kind=abi.SPLICE_EVT_HOLD)))
    assert entries(ld, "kgw_splice_hold") == {}
    await sp.close()


async def test_failed_insert_leaves_nothing_behind():
    """The sockhash is full after the first socket: splice() raises the map's error and
    takes both sockets out of every map again; another socket's entry stays."""
    ld = FakeLoader({"KGW_SOCKHASH_SIZE": 2})
    try:
        sp = Splicer(ld)
        foreign = abi.u64(12345)
        ld.maps.get("kgw_sockhash").update(foreign, abi.sockhash_val(99))
        with ExitStack() as stack:
            a, b = tcp_pair(stack)
            stack.enter_context(a)
            stack.enter_context(b)
            with pytest.raises(MapError) as e:
                await sp.splice(a, b)
            assert e.value.errno == errno.E2BIG
        assert list(ld.maps.get("kgw_sockhash").keys()) == [foreign]
        assert entries(ld, "kgw_splice_peer") == {}
        await sp.close()
    finally:
        ld.close()
