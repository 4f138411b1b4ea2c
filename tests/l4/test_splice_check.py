"""Splice pieces that need no kernel: the end-of-connection delivery check
(kgw_l4.splice.duplicated_bytes) and the --l4-splice-backlog sizes."""

import pytest

from kgw_l4.splice import duplicated_bytes


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

    assert abi.SIZES["KGW_SPLICE_BACKLOG_MAX"] == 0  # backpressure is opt-in
    got = sizes_with_splice_backlog(1024)
    assert got["KGW_SPLICE_BACKLOG_MAX"] == 1024
    assert {k: v for k, v in got.items() if k != "KGW_SPLICE_BACKLOG_MAX"} == \
        {k: v for k, v in abi.SIZES.items() if k != "KGW_SPLICE_BACKLOG_MAX"}
    with pytest.raises(ValueError, match="--l4-splice-backlog"):
        sizes_with_splice_backlog(-1)
