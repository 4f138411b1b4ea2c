"""gRPC's own header values as the exchange reads and writes them (gRPC over HTTP/2:
grpc-timeout is at most 8 digits and a unit; grpc-message is percent-encoded)."""

from __future__ import annotations

import pytest

from kgw_l7.exchange import grpc_message, grpc_timeout


@pytest.mark.parametrize("value,seconds", [
    (b"1S", 1.0), (b"300m", 0.3), (b"2M", 120.0), (b"1H", 3600.0), (b"5u", 5e-6), (b"7n", 7e-9),
    (b"99999999S", 99999999.0), (b"0m", 0.0),
    (b"999999999S", None),  # nine digits
    (b"S", None), (b"10", None), (b"10s", None), (b"-1S", None), (b"1.5S", None), (b"", None),
])
def test_grpc_timeout(value: bytes, seconds: float | None) -> None:
    got = grpc_timeout(value)
    assert got == pytest.approx(seconds) if seconds is not None else got is None


def test_grpc_message_is_percent_encoded() -> None:
    assert grpc_message(b"no route") == b"no route"
    assert grpc_message("50% \u00fc\n".encode()) == b"50%25 %C3%BC%0A"
