"""The splice agent's end-of-connection delivery check (kgw_l4.splice.duplicated_bytes)."""

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
