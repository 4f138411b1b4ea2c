"""The fake API server itself speaks the protocol the real client expects."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kube import objects as o
from tests.kube.fake_apiserver import FakeAPIServer, label_match

GROUP = "gateway.networking.k8s.io"


def test_status_subresource_put_patch_and_conflicts(fake: FakeAPIServer,
                                                    api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.create(o.gateway_class())
    gc = custom.get_cluster_custom_object_status(GROUP, "v1", "gatewayclasses", "kgw")
    gc["status"] = {"conditions": [{"type": "Accepted", "status": "True"}]}
    gc["spec"]["controllerName"] = "ignored/by-status-put"
    put = custom.replace_cluster_custom_object_status(GROUP, "v1", "gatewayclasses", "kgw", gc)
    assert put["spec"]["controllerName"] == "kgw.dev/gateway-controller"  # only status changes
    assert put["metadata"]["generation"] == 1
    with pytest.raises(ApiException) as err:  # a stale resourceVersion
        custom.replace_cluster_custom_object_status(GROUP, "v1", "gatewayclasses", "kgw", gc)
    assert err.value.status == 409
    patched = custom.patch_cluster_custom_object_status(
        GROUP, "v1", "gatewayclasses", "kgw",
        {"status": {"supportedFeatures": [{"name": "HTTPRoute"}]}})
    assert patched["status"]["conditions"] and patched["status"]["supportedFeatures"]
    with pytest.raises(ApiException) as err:
        custom.patch_cluster_custom_object_status(
            GROUP, "v1", "gatewayclasses", "kgw",
            {"metadata": {"resourceVersion": "1"}, "status": {}})
    assert err.value.status == 409
    spec = custom.get_cluster_custom_object(GROUP, "v1", "gatewayclasses", "kgw")
    spec["spec"]["description"] = "changed"
    assert custom.replace_cluster_custom_object(GROUP, "v1", "gatewayclasses", "kgw", spec)[
        "metadata"]["generation"] == 2


def test_leases(fake: FakeAPIServer, api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    body = client.V1Lease(metadata=client.V1ObjectMeta(name="l"),
                          spec=client.V1LeaseSpec(holder_identity="a"))
    coord.create_namespaced_lease("ns", body)
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease("ns", body)
    assert err.value.status == 409
    lease = coord.read_namespaced_lease("l", "ns")
    assert lease.spec.holder_identity == "a"


def test_unauthenticated_requests_are_refused(fake: FakeAPIServer) -> None:
    anonymous = client.ApiClient(client.Configuration(host=fake.url))
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(anonymous).list_namespace()
    assert err.value.status == 401


def test_label_selectors() -> None:
    labels = {"a": "1", "b": "2"}
    assert label_match("a=1,b", labels) and label_match("a in (1,3)", labels)
    assert not label_match("a!=1", labels) and not label_match("!b", labels)
    assert not label_match("c", labels) and label_match("c notin (x)", labels)
