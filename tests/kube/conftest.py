"""Fixtures: a fake API server on loopback, and the real client configured from a kubeconfig."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.kube.client import make_api_client
from controller.kube.source import KubeOptions, KubeSource
from tests.kube.fake_apiserver import FakeAPIServer

#: Fast timings for tests: quick backoff, short watches, frequent secret refresh.
FAST = KubeOptions(watch_timeout=5, backoff_initial=0.05, backoff_max=0.3, secret_refresh=0.5,
                   rediscover=0.3)


@pytest.fixture
def fake() -> Iterator[FakeAPIServer]:
    server = FakeAPIServer(bookmark_interval=0.1).start()
    yield server
    server.stop()


@pytest.fixture
def api(fake: FakeAPIServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    path = tmp_path / "kubeconfig"
    path.write_text(fake.kubeconfig())
    a = make_api_client(str(path))
    yield a
    a.close()


async def until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Await until check() is truthy (without raising); return its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while loop.time() < deadline:
        try:
            value = check()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return value
        except (AssertionError, KeyError, LookupError, TypeError, AttributeError) as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last error: {last!r})")


@pytest.fixture
async def make_source(api: client.ApiClient) -> AsyncIterator[Callable[..., KubeSource]]:
    made: list[KubeSource] = []

    def make(**overrides: Any) -> KubeSource:
        import dataclasses
        src = KubeSource(api, dataclasses.replace(FAST, **overrides))
        made.append(src)
        return src

    yield make
    for src in made:
        await src.close()
