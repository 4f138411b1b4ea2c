"""KubeSource against a fake API server speaking the real protocol, with the real client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client

from controller.kube.client import make_api_client
from controller.kube.source import KubeSource
from controller.objects import ObjectKey
from controller.source import Batch, EventType
from controller.supervisor import Supervisor
from tests.helpers import free_port
from tests.kube import objects as o
from tests.kube.conftest import FAST, until
from tests.kube.fake_apiserver import FakeAPIServer, default_resources

GROUP = "gateway.networking.k8s.io"


class Recorder:
    """Runs a source, keeping every batch it yields."""

    def __init__(self, source: KubeSource) -> None:
        self.source = source
        self.batches: list[Batch] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for b in self.source.batches():
            self.batches.append(b)

    def events(self, key: ObjectKey) -> list[tuple[EventType, str]]:
        return [(e.type, e.resource_version) for b in self.batches for e in b.events
                if e.key == key]

    async def stop(self) -> None:
        await self.source.close()
        await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def running(make_source: Callable[..., KubeSource]) -> AsyncIterator[Callable[..., Any]]:
    sups: list[tuple[Supervisor, asyncio.Task[None]]] = []

    def start(**options: Any) -> Supervisor:
        sup = Supervisor(make_source(**options))
        sups.append((sup, asyncio.create_task(sup.run())))
        return sup

    yield start
    for sup, task in sups:
        await sup.source.close()
        try:
            await asyncio.wait_for(task, 5)
        except asyncio.CancelledError:
            pass


def create_route(api: client.ApiClient, route: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, "v1", route["metadata"]["namespace"], "httproutes", route)


async def test_initial_state_is_one_batch_of_added(fake: FakeAPIServer,
                                                   make_source: Callable[..., KubeSource] ) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    fake.create(o.http_route("a.example.com"))
    source = make_source(page_size=2)  # several pages per kind
    first = await asyncio.wait_for(source.batches().__anext__(), 10)
    assert all(e.type is EventType.ADDED for e in first.events)
    keys = {e.key for e in first.events}
    assert keys == {ObjectKey("Namespace", "", "test"), ObjectKey("GatewayClass", "", "kgw"),
                    ObjectKey("Gateway", "test", "gw"), ObjectKey("Service", "test", "svc"),
                    ObjectKey("EndpointSlice", "test", "svc-1"),
                    ObjectKey("HTTPRoute", "test", "web")}
    route = next(e for e in first.events if e.key.kind == "HTTPRoute")
    server = fake.get(o.GW, "HTTPRoute", "test", "web")
    assert route.resource_version == server["metadata"]["resourceVersion"]
    assert route.generation == 1
    # Built-in list items come without kind/apiVersion; the source restores them.
    svc = next(e for e in first.events if e.key.kind == "Service")
    assert svc.obj["apiVersion"] == "v1" and svc.obj["kind"] == "Service"
    assert first.problems == ()
    lists = [q for q in fake.requests if q.verb == "list" and q.resource == "namespaces"]
    assert lists and all(q.code == 200 for q in lists)


async def test_create_change_delete_reach_the_data_plane_config(
        fake: FakeAPIServer, api: client.ApiClient, running: Callable[..., Supervisor]) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    sup = running()
    await until(lambda: sup.translation is not None)
    assert o.vhosts(sup.translation) == set()

    create_route(api, o.http_route("a.example.com"))
    await until(lambda: o.vhosts(sup.translation) == {"a.example.com"})
    key = ObjectKey("HTTPRoute", "test", "web")
    assert sup.store.get_key(key)["metadata"]["generation"] == 1

    custom = client.CustomObjectsApi(api)
    current = custom.get_namespaced_custom_object(GROUP, "v1", "test", "httproutes", "web")
    current["spec"]["hostnames"] = ["b.example.com"]
    custom.replace_namespaced_custom_object(GROUP, "v1", "test", "httproutes", "web", current)
    await until(lambda: o.vhosts(sup.translation) == {"b.example.com"})
    assert sup.store.get_key(key)["metadata"]["generation"] == 2

    custom.delete_namespaced_custom_object(GROUP, "v1", "test", "httproutes", "web")
    await until(lambda: key not in sup.store)
    assert o.vhosts(sup.translation) == set()

    # An EndpointSlice change reaches the backends.
    port = free_port()
    fake.update(o.endpoint_slice(port))
    create_route(api, o.http_route("c.example.com"))

    def backend_ports() -> set[int]:
        text = json.dumps(sup.translation.l7.to_dict())
        return {port} if str(port) in text else set()
    await until(lambda: backend_ports() == {port})


async def test_watch_drop_and_410_lose_no_event(fake: FakeAPIServer,
                                                make_source: Callable[..., KubeSource]) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    fake.create(o.http_route("a.example.com", name="stays"))
    fake.create(o.http_route("a.example.com", name="goes"))
    rec = Recorder(make_source())
    await until(lambda: rec.batches)
    stays, goes = ObjectKey("HTTPRoute", "test", "stays"), ObjectKey("HTTPRoute", "test", "goes")
    route_lists = lambda: [q for q in fake.requests  # noqa: E731
                           if q.verb == "list" and q.resource == "httproutes"]
    assert len(route_lists()) == 1

    # 1. The stream is cut mid-way; changes made meanwhile arrive by resuming from the
    #    last resourceVersion (no relist).
    fake.drop_watches()
    changed = o.http_route("b.example.com", name="stays")
    fake.update(changed)
    await until(lambda: (EventType.MODIFIED,
                         fake.get(o.GW, "HTTPRoute", "test", "stays")["metadata"]
                         ["resourceVersion"]) in rec.events(stays))
    assert len(route_lists()) == 1
    watches = [q for q in fake.requests if q.verb == "watch" and q.resource == "httproutes"]
    assert len(watches) >= 2

    # 2. The API server goes away; while it is away an object is deleted, another added,
    #    and history is compacted: the resumed watch gets 410, the source relists and
    #    emits DELETED for what vanished meanwhile.
    fake.pause()
    await until(lambda: "503" in rec.source.health())
    fake.delete(o.GW, "HTTPRoute", "test", "goes")
    fake.create(o.http_route("c.example.com", name="new"))
    fake.compact()
    fake.resume()
    new = ObjectKey("HTTPRoute", "test", "new")
    await until(lambda: rec.events(new) and rec.events(goes)[-1][0] is EventType.DELETED)
    # (a relist; on a loaded machine one full run in three saw a second one after the 410)
    assert len(route_lists()) >= 2
    await until(lambda: rec.source.health() == "")
    # Nothing was lost: what was published is what the server has.
    published = {e.key for b in rec.batches for e in b.events if e.key.kind == "HTTPRoute"
                 and e.type is not EventType.DELETED} - {goes}
    assert published == {stays, new}
    assert [t for t, _ in rec.events(goes)] == [EventType.ADDED, EventType.DELETED]
    await rec.stop()


async def test_malformed_watch_events_are_skipped(fake: FakeAPIServer,
                                                  make_source: Callable[..., KubeSource],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    rec = Recorder(make_source())
    await until(lambda: rec.batches)
    await until(
        lambda: any(q.verb == "watch" and q.resource == "httproutes" for q in fake.requests))
    await asyncio.sleep(0.2)  # the watch is streaming
    for line in (b"{not json", b'{"type": "ADDED"}',
                 b'{"type": "ADDED", "object": {"metadata": {}}}',
                 b'{"type": "ADDED", "object": []}',
                 b'{"type": "SURPRISE", "object": {"metadata": {"name": "x"}}}',
                 b'"just a string"'):
        fake.inject(o.GW, "HTTPRoute", line)
    fake.create(o.http_route("a.example.com"))
    await until(lambda: rec.events(ObjectKey("HTTPRoute", "test", "web")))
    assert sum("malformed watch event" in r.message or "without a usable metadata.name" in r.message
               or "unknown type" in r.message for r in caplog.records) >= 5
    assert not rec.task.done()
    await rec.stop()


async def test_namespace_selector(fake: FakeAPIServer, running: Callable[..., Supervisor]) -> None:
    for obj in o.basic(free_port(), free_port(), ns="in"):
        fake.create(obj)
    fake.update(o.namespace("in", {"kgw": "yes"}))
    fake.create(o.namespace("out"))
    fake.create(o.service("out"))
    sup = running(namespace_selector="kgw=yes")
    await until(lambda: sup.translation is not None)
    assert ObjectKey("Service", "in", "svc") in sup.store
    assert ObjectKey("Service", "out", "svc") not in sup.store
    assert ObjectKey("Namespace", "", "out") not in sup.store

    fake.update(o.namespace("out", {"kgw": "yes"}))  # enters the selection
    await until(lambda: ObjectKey("Service", "out", "svc") in sup.store)
    fake.update(o.namespace("out"))  # leaves it again
    await until(lambda: ObjectKey("Service", "out", "svc") not in sup.store)
    assert ObjectKey("Namespace", "", "out") not in sup.store
    assert ObjectKey("Service", "in", "svc") in sup.store
    assert all(q.path.startswith("/api/v1/namespaces") and q.verb in ("list", "watch")
               for q in fake.requests if q.resource == "namespaces")
    selected = {q.resource for q in fake.requests if "labelSelector=" in q.query}
    assert selected == {"namespaces"}
    assert all("labelSelector=kgw%3Dyes" in q.query for q in fake.requests
               if q.resource == "namespaces" and q.verb in ("list", "watch"))


async def test_missing_crd_is_reported_once_and_the_rest_works(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeAPIServer(default_resources(
        {"TCPRoute": None, "UDPRoute": None, "HTTPRoute": "v1beta1"}),
                         bookmark_interval=0.1).start()
    try:
        path = tmp_path / "kc2"
        path.write_text(fake.kubeconfig())
        api2 = make_api_client(str(path))
        for obj in o.basic(free_port(), free_port()):
            fake.create(obj)
        route = o.http_route("a.example.com")
        route["apiVersion"] = "gateway.networking.k8s.io/v1beta1"
        fake.create(route)
        source = KubeSource(api2, dataclasses.replace(FAST, rediscover=0.2))
        sup = Supervisor(source)
        task = asyncio.create_task(sup.run())
        await until(lambda: o.vhosts(sup.translation) == {"a.example.com"})
        assert source.served["HTTPRoute"] == "gateway.networking.k8s.io/v1beta1"
        assert sup.store.get_key(ObjectKey("HTTPRoute", "test", "web"))["apiVersion"].endswith(
            "/v1beta1")
        problems = [str(p) for p in sup.problems]
        assert any("TCPRoute" in p and "not installed" in p for p in problems), problems
        assert any("UDPRoute" in p for p in problems)
        await asyncio.sleep(1.0)  # several rediscovery rounds
        warnings = [r for r in caplog.records if "TCPRoute" in r.getMessage()
                    and r.levelname == "WARNING"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        errors = [r for r in caplog.records if "TCPRoute" in r.getMessage() and r.name == "kgw"]
        assert len(errors) == 1  # the supervisor logs a problem once, when it appears
        await source.close()
        await asyncio.wait_for(task, 5)
        api2.close()
    finally:
        fake.stop()


async def test_only_referenced_secrets_are_read(fake: FakeAPIServer,
                                                running: Callable[..., Supervisor]) -> None:
    port = free_port()
    for obj in o.basic(port, free_port()):
        fake.create(obj)
    fake.create(o.secret("unrelated"))
    fake.create(o.secret("cert"))
    sup = running()
    await until(lambda: sup.translation is not None)
    assert not any(k.kind == "Secret" for k in sup.store.keys())

    fake.update(o.gateway(port, tls_secret="cert"))
    key = ObjectKey("Secret", "test", "cert")
    await until(lambda: key in sup.store)
    assert ObjectKey("Secret", "test", "unrelated") not in sup.store
    fake.update(o.secret("cert", cert="cm90YXRlZA=="))  # rotated: picked up by the refresh
    await until(lambda: sup.store.get_key(key)["data"]["tls.crt"] == "cm90YXRlZA==")
    fake.update(o.gateway(port))  # no longer referenced
    await until(lambda: key not in sup.store)
    secret_requests = {(q.verb, q.name) for q in fake.requests if q.resource == "secrets"}
    assert secret_requests == {("get", "cert")}


async def test_crd_removed_then_installed_again(fake: FakeAPIServer,
                                                running: Callable[..., Supervisor]) -> None:
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    fake.create(o.http_route("a.example.com"))
    sup = running(rediscover=0.2)
    await until(lambda: o.vhosts(sup.translation) == {"a.example.com"})
    key = ObjectKey("HTTPRoute", "test", "web")

    served = fake.resource_for(o.GW, "HTTPRoute")
    fake.resources.remove(served)  # the CRD is deleted: its objects are gone with it
    fake.drop_watches()
    await until(lambda: key not in sup.store)
    assert o.vhosts(sup.translation) == set()
    assert any("HTTPRoute" in str(p) for p in sup.problems)
    assert sup.translation is not None and ObjectKey("Gateway", "test", "gw") in sup.store

    fake.resources.append(served)  # installed again: found by the next discovery
    await until(lambda: key in sup.store)
    await until(lambda: o.vhosts(sup.translation) == {"a.example.com"})
    assert not any("HTTPRoute" in str(p) for p in sup.problems)


async def test_bookmarks_move_the_resume_point(fake: FakeAPIServer,
                                               make_source: Callable[..., KubeSource]) -> None:
    """A quiet kind resumes from its last bookmark, not its last event: no relist after
    compaction."""
    for obj in o.basic(free_port(), free_port()):
        fake.create(obj)
    fake.create(o.http_route("a.example.com"))
    rec = Recorder(make_source())
    await until(lambda: rec.batches)
    for i in range(5):  # other kinds move the global resourceVersion on
        fake.create({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"cm{i}", "namespace": "test"}, "data": {"k": "v"}})
    cm = ObjectKey("ConfigMap", "test", "cm4")
    await until(lambda: rec.events(cm))
    await asyncio.sleep(0.4)  # a few bookmark intervals: the HTTPRoute watch hears the new version
    fake.compact(keep_current=True)
    fake.drop_watches()
    fake.create(o.http_route("b.example.com", name="later"))
    await until(lambda: rec.events(ObjectKey("HTTPRoute", "test", "later")))
    route_lists = [q for q in fake.requests if q.verb == "list" and q.resource == "httproutes"]
    assert len(route_lists) == 1
    await rec.stop()
