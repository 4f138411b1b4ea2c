"""X-Request-Id values: UUID-shaped, distinct, also across the table/format boundaries."""

import re

from kgw_l7.exchange import _RequestIds

SHAPE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_ids_are_uuid_shaped_and_distinct_across_the_low_byte_boundary():
    ids = _RequestIds()
    got = [ids.next() for _ in range(1000)]  # crosses 0xff -> 0x100 three times
    assert all(SHAPE.fullmatch(i) for i in got), got[:3]
    assert len(set(got)) == 1000
    prefix = got[0][:24]
    assert all(i[:24] == prefix for i in got)  # one random prefix per worker
    assert got[254][24:] == b"0000000000ff" and got[255][24:] == b"000000000100"


def test_counter_wraps_after_48_bits():
    ids = _RequestIds()
    ids._n = 0xFFFFFFFFFEFF  # the next id starts a new block of 256
    got = [ids.next()[24:] for _ in range(258)]
    assert got[0] == b"ffffffffff00"
    assert got[-3:] == [b"ffffffffffff", b"000000000000", b"000000000001"]
