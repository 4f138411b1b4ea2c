"""Status write-back through the status subresource, against the fake API server."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client

from controller.kube.source import KubeSource
from controller.kube.status_writer import KubeStatusWriter, merge_status
from controller.supervisor import Supervisor
from tests.helpers import condition, free_port
from tests.kube import objects as o
from tests.kube.conftest import until
from tests.kube.fake_apiserver import FakeAPIServer, Request


@pytest.fixture
async def agent(api: client.ApiClient, make_source: Callable[..., KubeSource]
                ) -> AsyncIterator[Callable[[], tuple[Supervisor, KubeStatusWriter]]]:
    tasks: list[asyncio.Task[Any]] = []
    sups: list[Supervisor] = []

    def start() -> tuple[Supervisor, KubeStatusWriter]:
        writer = KubeStatusWriter(api, backoff_initial=0.05, backoff_max=0.2)
        sup = Supervisor(make_source(), status_writer=writer)
        sups.append(sup)
        tasks.extend([asyncio.create_task(sup.run()), asyncio.create_task(writer.run())])
        return sup, writer

    yield start
    for sup in sups:
        await sup.source.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def writes(fake: FakeAPIServer) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((q.resource, q.name) for q in fake.status_writes() if q.code == 200)


def route_status(fake: FakeAPIServer, name: str = "web") -> dict[str, Any]:
    return (fake.get(o.GW, "HTTPRoute", "test", name) or {}).get("status") or {}


def accepted(fake: FakeAPIServer, name: str = "web") -> dict[str, Any] | None:
    parents = route_status(fake, name).get("parents") or []
    ours = [p for p in parents if p.get("controllerName") == "kgw.dev/gateway-controller"]
    return condition(ours[0]["conditions"], "Accepted") if ours else None


async def test_status_written_once_per_change(fake: FakeAPIServer,
                                              agent: Callable[..., Any]) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    fake.create(o.http_route("a.example.com"))
    sup, writer = agent()
    await until(lambda: accepted(fake) and (fake.get(o.GW, "Gateway", "test", "gw").get("status")
                                            and fake.get(o.GW, "GatewayClass", "",
                                                         "kgw").get("status")))
    await asyncio.sleep(0.5)  # let the writer's own status updates come back through the watch
    first = writes(fake)
    assert first == {("gatewayclasses", "kgw"): 1, ("gateways", "gw"): 1,
                     ("httproutes", "web"): 1}, first
    cond = accepted(fake)
    assert cond["status"] == "True" and cond["observedGeneration"] == 1 and cond[
        "lastTransitionTime"]
    gw_conds = fake.get(o.GW, "Gateway", "test", "gw")["status"]["conditions"]
    assert condition(gw_conds, "Programmed") is not None
    gc = fake.get(o.GW, "GatewayClass", "", "kgw")["status"]["conditions"]
    assert condition(gc, "Accepted")["status"] == "True"

    # A resync (410 -> relist) changes nothing, so nothing is written.
    route_lists = lambda: sum(  # noqa: E731
        q.verb == "list" and q.resource == "httproutes" for q in fake.requests)
    fake.compact()
    fake.drop_watches()
    await until(lambda: route_lists() == 2)
    await asyncio.sleep(0.5)
    assert writes(fake) == first

    # A spec change is written once, with the new observedGeneration.
    route = fake.get(o.GW, "HTTPRoute", "test", "web")
    route["spec"]["hostnames"] = ["b.example.com"]
    fake.update(route)
    await until(lambda: accepted(fake)["observedGeneration"] == 2)
    await asyncio.sleep(0.5)
    after = writes(fake)
    assert after[("httproutes", "web")] == 2
    assert after[("gatewayclasses", "kgw")] == 1
    # The transition time of a condition whose status did not change is kept.
    assert accepted(fake)["lastTransitionTime"] == cond["lastTransitionTime"]
    assert writer.writes == sum(after.values())


async def test_conflict_is_retried_and_other_controllers_entries_kept(
        fake: FakeAPIServer, agent: Callable[..., Any]) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    created = fake.create(o.http_route("a.example.com"))
    other = {"parentRef": {"name": "theirs", "namespace": "test"},
             "controllerName": "example.com/other",
             "conditions": [{"type": "Accepted", "status": "False", "reason": "NotAllowed",
                             "message": "",
                             "observedGeneration": 1,
                             "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
    fake._update(fake.resource_for(o.GW, "HTTPRoute"), "test", "web",
                 {**created, "status": {"parents": [other]}}, status_only=True)

    raced = []

    def race(req: Request) -> None:
        # Someone else changes the route between the writer's read and its write.
        if req.verb == "get" and req.subresource == "status" and req.name == "web" and not raced:
            raced.append(req)
            route = fake.get(o.GW, "HTTPRoute", "test", "web")
            route["metadata"]["labels"] = {"touched": "yes"}
            fake.update(route)
    fake.after.append(race)

    agent()
    await until(lambda: accepted(fake))
    puts = [q for q in fake.status_writes() if q.name == "web"]
    assert [q.code for q in puts] == [409, 200]
    parents = route_status(fake)["parents"]
    assert other in parents and len(parents) == 2
    assert fake.get(o.GW, "HTTPRoute", "test", "web")["metadata"]["labels"] == {"touched": "yes"}


def test_merge_status_keeps_times_and_other_controllers() -> None:
    mine = {"parents": [{"parentRef": {"name": "gw"},
                         "controllerName": "kgw.dev/gateway-controller",
                         "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                         "lastTransitionTime": "2025-06-01T00:00:00Z"}]}]}
    server = {"parents": [
        {"parentRef": {"name": "x"}, "controllerName": "other", "conditions": []},
        {"parentRef": {"name": "gw"}, "controllerName": "kgw.dev/gateway-controller",
         "conditions": [{"type": "Accepted", "status": "True", "reason": "Old",
                         "lastTransitionTime": "2024-01-01T00:00:00Z"}]}]}
    merged = merge_status(server, mine)
    assert merged["parents"][0]["controllerName"] == "other"
    ours = merged["parents"][1]["conditions"][0]
    assert ours["reason"] == "Accepted" and ours["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    # Nothing to say any more: only our entries go.
    assert merge_status(server, None) == {"parents": [server["parents"][0]]}


async def test_what_kgw_cannot_serve_becomes_a_condition(fake: FakeAPIServer,
                                                         agent: Callable[..., Any]) -> None:
    """The API server accepts a route to a Service that does not exist; kgw says so in status."""
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    route = o.http_route("a.example.com")
    route["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing"
    fake.create(route)
    sup, _ = agent()

    def resolved_refs() -> dict[str, Any] | None:
        parents = route_status(fake).get("parents") or []
        return parents and condition(parents[0]["conditions"], "ResolvedRefs")
    cond = await until(resolved_refs)
    assert cond["status"] == "False" and cond["reason"] == "BackendNotFound"
