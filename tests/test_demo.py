"""`make demo` works: the bundled example routes, served by kgw, behave as the README says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_demo_check() -> None:
    proc = subprocess.run([sys.executable, "examples/demo.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo check: ok" in proc.stdout
