"""Ingress status through the kube source and status writer, against the fake API server:
an Ingress of kgw's default class gets status.loadBalancer with the node addresses; one
of another class is left alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes import client

from controller.ingress.convert import Listening
from controller.kube.source import KubeSource
from controller.kube.status_writer import KubeStatusWriter
from controller.supervisor import Supervisor
from controller.translate import Options
from tests.helpers import free_port
from tests.kube import objects as o
from tests.kube.conftest import until
from tests.kube.fake_apiserver import FakeAPIServer

NET = "networking.k8s.io/v1"


def ingress(name: str, cls: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"defaultBackend": {"service": {"name": "svc",
                                                           "port": {"number": 80}}}}
    if cls:
        spec["ingressClassName"] = cls
    return {"apiVersion": NET, "kind": "Ingress",
            "metadata": {"name": name, "namespace": "test"}, "spec": spec}


@pytest.fixture
async def agent(api: client.ApiClient, make_source: Callable[..., KubeSource]
                ) -> AsyncIterator[Supervisor]:
    writer = KubeStatusWriter(api, backoff_initial=0.05, backoff_max=0.2)
    opts = Options(node_addresses=("192.0.2.9",), ingress=Listening(free_port(), 0))
    sup = Supervisor(make_source(), options=opts, status_writer=writer)
    tasks = [asyncio.create_task(sup.run()), asyncio.create_task(writer.run())]
    yield sup
    await sup.source.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def lb(fake: FakeAPIServer, name: str) -> Any:
    return ((fake.get(NET, "Ingress", "test", name) or {}).get("status") or {}).get("loadBalancer")


async def test_ingress_status_written_back(fake: FakeAPIServer, agent: Supervisor) -> None:
    for obj in (o.namespace("test"), o.service("test"), o.endpoint_slice(free_port()),
                {"apiVersion": NET, "kind": "IngressClass",
                 "metadata": {"name": "kgw", "annotations": {
                     "ingressclass.kubernetes.io/is-default-class": "true"}},
                 "spec": {"controller": "kgw.dev/ingress-controller"}},
                ingress("web"), ingress("theirs", "nginx")):
        fake.create(obj)
    await until(lambda: lb(fake, "web") == {"ingress": [{"ip": "192.0.2.9"}]})
    await asyncio.sleep(0.3)
    assert lb(fake, "theirs") is None
    assert [q.name for q in fake.status_writes() if q.resource == "ingresses"] == ["web"]

    # Another class now: kgw's address goes (status tells what kgw serves).
    web = fake.get(NET, "Ingress", "test", "web")
    web["spec"]["ingressClassName"] = "nginx"
    fake.update(web)
    await until(lambda: lb(fake, "web") == {})
