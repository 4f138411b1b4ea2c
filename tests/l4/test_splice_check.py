"""Splice pieces that need no kernel: the end-of-connection delivery check
(kgw_l4.splice.duplicated_bytes), the byte counts a splice starts from (taken_in,
received_before) and the --l4-splice-backlog sizes."""

import socket

import pytest

from kgw_l4.splice import _at_once, duplicated_bytes, received_before, taken_in


@pytest.mark.parametrize("arrived, delivered, extra", [
    (1000, 1000, 0),        # every byte once (FINs on both sides, both acknowledged)
    (1000, 999, 0),         # the destination's FIN not acknowledged yet
    (1000, 1001, 0),        # one sequence number apart: a FIN, not data
    (1000, 500, 0),         # fewer delivered (an aborted splice): not a duplicate
    (67108877, 67239197, 130320),  # the CI failure: 130320 bytes seen twice
])
def test_duplicated_bytes(arrived, delivered, extra):
    assert duplicated_bytes(arrived, delivered) == extra


def test_splice_backlog_option_sets_the_size_or_refuses():
    from kgw_l4 import abi
    from kgw_l4.plane import sizes_with_splice_backlog

    assert abi.SIZES["KGW_SPLICE_BACKLOG_MAX"] == 1024  # backpressure is on by default
    got = sizes_with_splice_backlog(1024)
    assert got["KGW_SPLICE_BACKLOG_MAX"] == 1024
    assert {k: v for k, v in got.items() if k != "KGW_SPLICE_BACKLOG_MAX"} == \
        {k: v for k, v in abi.SIZES.items() if k != "KGW_SPLICE_BACKLOG_MAX"}
    with pytest.raises(ValueError, match="--l4-splice-backlog"):
        sizes_with_splice_backlog(-1)


def test_taken_in_counts_bytes_written_whether_acknowledged_or_queued():
    """Acknowledged plus queued, each byte once: while the receiver reads nothing most
    of them wait in the send queue; once it has read them all they are acknowledged."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.create_connection(srv.getsockname())
        b, _ = srv.accept()
        with a, b:
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            base = taken_in(a)
            a.setblocking(False)
            written = 0
            try:
                while written < 8 * 1024 * 1024:
                    written += a.send(b"x" * 65536)
            except BlockingIOError:
                pass
            assert written > 0
            assert taken_in(a) - base == written
            b.settimeout(10)
            got = 0
            while got < written:
                got += len(b.recv(1 << 20))
            assert taken_in(a) - base == written


def test_a_pair_read_across_a_moving_counter_is_read_again():
    """A greeting lands between the two readings: bytes_received says 0, the receive
    queue already 12. The pair (0, 12) would put 12 bytes "before the splice" that are
    not; the counter moved, so the pair is read again."""
    counter = iter([0, 12, 12]).__next__
    queue = iter([12, 12]).__next__
    assert _at_once(counter, queue) == (12, 12)


def test_received_before_counts_what_userspace_took_not_what_waits():
    with socket.create_server(("127.0.0.1", 0)) as srv:
        a = socket.create_connection(srv.getsockname())
        b, _ = srv.accept()
        with a, b:
            b.sendall(b"10.0.0.1:80\n")  # a backend that speaks first
            a.settimeout(10)
            assert a.recv(3, socket.MSG_PEEK) == b"10."
            assert received_before(a) == 0  # all 12 still queued, left for the verdict
            assert a.recv(5) == b"10.0."
            assert received_before(a) == 5
