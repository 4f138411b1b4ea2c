from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import pytest  # noqa: E402


@pytest.fixture
def host():
    """A private network namespace (see tests/netns.py): ``kgw run`` with every default."""
    from tests.netns import private_host, why_not

    reason = why_not()
    if reason:
        pytest.skip(f"private host: {reason}")
    with private_host() as h:
        yield h
