"""Leader election over a Lease: one status writer per cluster, takeover on expiry."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.kube.client import make_api_client
from controller.kube.leader import LeaderElector
from controller.kube.source import KubeSource
from controller.kube.status_writer import KubeStatusWriter
from controller.supervisor import Supervisor
from tests.helpers import free_port
from tests.kube import objects as o
from tests.kube.conftest import FAST, until
from tests.kube.fake_apiserver import FakeAPIServer

TIMING = {"lease_duration": 2, "renew_deadline": 1.0, "retry_period": 0.2}


def lease(fake: FakeAPIServer) -> dict[str, Any]:
    return (fake.get("coordination.k8s.io/v1", "Lease", "kgw-system", "kgw-status-writer")
            or {}).get("spec") or {}


@dataclasses.dataclass
class Agent:
    name: str
    sup: Supervisor
    writer: KubeStatusWriter
    elector: LeaderElector
    tasks: list[asyncio.Task[Any]]

    async def crash(self) -> None:
        """Stop without handing the Lease back (as a killed pod would)."""
        await self.elector.stop(release=False)
        await self.sup.source.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def agents(fake: FakeAPIServer, tmp_path: Path) -> AsyncIterator[Callable[[str], Agent]]:
    made: list[Agent] = []
    clients: list[client.ApiClient] = []

    def start(name: str) -> Agent:
        path = tmp_path / f"kubeconfig-{name}"
        path.write_text(fake.kubeconfig())
        api = make_api_client(str(path))
        api.user_agent = name  # tells the fake who is asking
        clients.append(api)
        box: list[KubeStatusWriter] = []
        elector = LeaderElector(api, "kgw-system", "kgw-status-writer", name, **TIMING,
                                on_started=lambda: box[0].write_all(),
                                on_stopped=lambda: box[0].drop())
        writer = KubeStatusWriter(api, is_leader=lambda: elector.is_leader, backoff_initial=0.05)
        box.append(writer)
        sup = Supervisor(KubeSource(api, FAST), status_writer=writer)
        tasks = [asyncio.create_task(sup.run()), asyncio.create_task(writer.run()),
                 asyncio.create_task(elector.run())]
        agent = Agent(name, sup, writer, elector, tasks)
        made.append(agent)
        return agent

    yield start
    for a in made:
        await a.crash()
    for c in clients:
        c.close()


async def test_one_writer_and_takeover_on_expiry(fake: FakeAPIServer,
                                                 agents: Callable[[str], Agent]) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    fake.create(o.http_route("a.example.com"))
    a = agents("agent-a")
    await until(lambda: a.elector.is_leader)
    b = agents("agent-b")
    await until(lambda: b.sup.translation is not None and a.sup.translation is not None)
    await until(lambda: fake.get(o.GW, "HTTPRoute", "test", "web").get("status"))
    await asyncio.sleep(2.5)  # longer than the lease: a renews, b must not take over
    assert a.elector.is_leader and not b.elector.is_leader
    assert lease(fake)["holderIdentity"] == "agent-a"
    writers = {q.user_agent for q in fake.status_writes()}
    assert writers == {"agent-a"}
    # Both serve: each agent has the same configuration from its own watch.
    assert o.vhosts(a.sup.translation) == o.vhosts(b.sup.translation) == {"a.example.com"}

    # a dies without releasing; a change made meanwhile is written by b once it leads.
    await a.crash()
    route = fake.get(o.GW, "HTTPRoute", "test", "web")
    route["spec"]["parentRefs"][0]["sectionName"] = "nope"  # -> Accepted=False
    fake.update(route)
    await until(lambda: b.elector.is_leader, timeout=10)
    spec = lease(fake)
    assert spec["holderIdentity"] == "agent-b" and spec["leaseTransitions"] == 1

    def route_not_accepted() -> bool:
        parents = fake.get(o.GW, "HTTPRoute", "test", "web")["status"]["parents"]
        return any(c["type"] == "Accepted" and c["status"] == "False"
                   and c["observedGeneration"] == 2 for p in parents for c in p["conditions"])
    await until(route_not_accepted)
    assert {q.user_agent for q in fake.status_writes()} == {"agent-a", "agent-b"}
    # The new leader looked at every current status once (and wrote only what differed).
    reads_b = {(q.resource, q.name) for q in fake.requests
               if q.user_agent == "agent-b" and q.subresource == "status" and q.verb == "get"}
    assert {("gatewayclasses", "kgw"), ("gateways", "gw"), ("httproutes", "web")} <= reads_b


async def test_release_hands_over_at_once(fake: FakeAPIServer,
                                          agents: Callable[[str], Agent]) -> None:
    a = agents("agent-a")
    await until(lambda: a.elector.is_leader)
    b = agents("agent-b")
    await asyncio.sleep(0.5)
    assert not b.elector.is_leader
    await a.elector.stop(release=True)
    assert not a.elector.is_leader
    # Well within the 2 s lease duration: the released Lease is free at once.
    await until(lambda: b.elector.is_leader, timeout=1.5)
    assert lease(fake)["holderIdentity"] == "agent-b"


async def test_leader_that_cannot_renew_stops_writing(fake: FakeAPIServer,
                                                      agents: Callable[[str], Agent]) -> None:
    a = agents("agent-a")
    await until(lambda: a.elector.is_leader)
    fake.pause()  # the API server is unreachable: a cannot renew
    await until(lambda: not a.elector.is_leader, timeout=TIMING["renew_deadline"] + 2)
    fake.resume()
    await until(lambda: a.elector.is_leader, timeout=5)


def test_settings_are_checked(api: client.ApiClient) -> None:
    with pytest.raises(ValueError):
        LeaderElector(api, "ns", "lease", "me", lease_duration=2, renew_deadline=3, retry_period=1)
    with pytest.raises(ValueError):
        LeaderElector(api, "ns", "lease", "", lease_duration=15)
