"""The event loop of a long-running command (``kgw run``, ``kgw agent``, ``python -m
kgw_l4 agent``): uvloop, for this loop only."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop without making uvloop the policy.

    Only this loop is uvloop. Threads keep getting the standard loop: pyroute2 runs an
    asyncio loop of its own in worker threads and needs AF_NETLINK datagram endpoints,
    which uvloop does not support.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio still works
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
