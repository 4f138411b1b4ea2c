"""The compiled build copies TLS passthrough's short connections with the pair relay: a
silent fallback (the extension not built, or stale) would bring back the kernel worker's
cost per handshake flight, and the relay's own tests would all skip."""

from __future__ import annotations

import os

import kgw_l7
from kgw_l4 import pairrelay


def test_the_compiled_build_has_the_pair_relay() -> None:
    if os.environ.get("KGW_NO_EXTENSIONS", "") not in ("", "0"):
        assert pairrelay.native() is None
        return
    if not kgw_l7.extension_in_use("downstream_h2"):
        return  # no compiled build at all (no Cython or no compiler): the interpreted path
    assert pairrelay.native() is not None, "kgw_l4._pairrelay not built or stale: run " \
        "scripts/build_ext.py"
