"""One process per pin directory (kgw_l4.pinlock), on a plain directory: flock works the
same on bpffs, where tests/l4/test_pins_in_use.py runs it with kgw itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kgw_l4 import pinlock

HOLD = """\
import sys, time
from kgw_l4 import pinlock
lock = pinlock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    d = str(tmp_path / "pins")
    lock = pinlock.acquire(d)
    with pytest.raises(pinlock.PinDirBusy) as e:
        pinlock.acquire(d)
    assert str(e.value) == pinlock.busy_message(d, os.getpid())
    assert f"(PID {os.getpid()})" in str(e.value) and "--l4-pin-dir" in str(e.value)
    lock.release()
    pinlock.acquire(d).release()


def test_kill9_of_the_holder_releases_the_lock(tmp_path):
    d = str(tmp_path / "pins")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, d], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert pinlock.holder(d) == holder.pid
        with pytest.raises(pinlock.PinDirBusy, match=f"PID {holder.pid}"):
            pinlock.acquire(d)
    finally:
        holder.kill()
        holder.wait(10)
    pinlock.acquire(d).release()
    assert pinlock.holder(d) is None
