"""The ExternalAuth HTTPRoute filter -> kgw_l7.config.ExtAuth on the rule; an unusable
service (missing, not granted) or the filter on a backendRef never serves unchecked."""

from __future__ import annotations

from typing import Any

import pytest

from controller.objects import ObjectKey
from controller.translate import Options, translate
from kgw_l7.config import Rule
from tests.translate.worlds import CLASS, gateway, grant, http_route, service, slice_, store_of

HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}
P = [{"name": "gw"}]
WORLD = [gateway("gw", [HTTP]), service("svc"), slice_("svc", ["10.0.0.1"]),
         service("authz", ns="auth", ports=[{"name": "grpc", "port": 9000}]),
         slice_("authz", ["10.0.0.9"], ns="auth", port=9001, port_name="grpc")]


def _route(filt: dict, on_backend: bool = False) -> dict:
    ref: dict[str, Any] = {"name": "svc", "port": 80}
    if on_backend:
        ref["filters"] = [filt]
        return http_route("r", P, [{"backendRefs": [ref]}])
    return http_route("r", P, [{"filters": [filt], "backendRefs": [ref]}])


def _rule(t: Any) -> Rule:
    return t.l7.listeners[0].virtual_hosts[0].routes[0].rule


def _cond(t: Any, type_: str) -> dict:
    parent = t.statuses[ObjectKey("HTTPRoute", "default", "r")]["parents"][0]
    return next(c for c in parent["conditions"] if c["type"] == type_)


def _run(*objs: dict) -> Any:
    return translate(store_of([CLASS, *WORLD, *objs]), Options(local_addresses=("127.0.0.1",)))


GRPC = {"type": "ExternalAuth", "externalAuth": {
    "protocol": "GRPC", "backendRef": {"name": "authz", "namespace": "auth", "port": 9000},
    "grpc": {"allowedHeaders": ["Authorization", "X-Tenant"]},
    "forwardBody": {"maxSize": 1024}}}
HTTP_AUTH = {"type": "ExternalAuth", "externalAuth": {
    "protocol": "HTTP", "backendRef": {"name": "authz", "namespace": "auth", "port": 9000},
    "http": {"path": "/check", "allowedHeaders": ["Cookie"],
             "allowedResponseHeaders": ["X-User"]}}}


def test_grpc_filter_lands_on_the_rule_spoken_in_h2c() -> None:
    t = _run(_route(GRPC), grant("g", "auth", "HTTPRoute", "default"))
    ea = _rule(t).filters.ext_auth
    assert ea is not None and ea.protocol == "GRPC" and ea.backend.protocol == "h2c"
    assert [(e.address, e.port) for e in ea.backend.endpoints] == [("10.0.0.9", 9001)]
    assert ea.allowed_headers == ("authorization", "x-tenant") and ea.max_body == 1024
    assert (ea.timeout, ea.fail_open, ea.status_on_error) == (2.0, False, 403)
    assert _rule(t).direct_status is None
    assert _cond(t, "ResolvedRefs")["status"] == "True"
    assert _cond(t, "Accepted")["status"] == "True"


def test_http_filter_fields() -> None:
    t = _run(_route(HTTP_AUTH), grant("g", "auth", "HTTPRoute", "default"))
    ea = _rule(t).filters.ext_auth
    assert ea is not None and ea.protocol == "HTTP" and ea.backend.protocol == "http"
    assert (ea.path_prefix, ea.allowed_headers, ea.allowed_response_headers, ea.max_body) == (
        "/check", ("cookie",), ("x-user",), 0)


@pytest.mark.parametrize("objs, reason", [
    ((), "RefNotPermitted"),  # another namespace, no ReferenceGrant
    ((grant("g", "auth", "HTTPRoute", "default", to_name="other"),), "RefNotPermitted"),
])
def test_unusable_service_answers_500_and_says_why(objs: tuple, reason: str) -> None:
    t = _run(_route(GRPC), *objs)
    rule = _rule(t)
    assert rule.direct_status == 500 and rule.filters.ext_auth is None
    cond = _cond(t, "ResolvedRefs")
    assert (cond["status"], cond["reason"]) == ("False", reason)
    assert "ExternalAuth filter" in cond["message"]


def test_missing_service_answers_500() -> None:
    filt = {"type": "ExternalAuth", "externalAuth": {
        "protocol": "HTTP", "backendRef": {"name": "nope", "port": 80}}}
    t = _run(_route(filt))
    assert _rule(t).direct_status == 500
    assert _cond(t, "ResolvedRefs")["reason"] == "BackendNotFound"


def test_filter_on_a_backend_ref_is_refused_not_ignored() -> None:
    t = _run(_route(HTTP_AUTH, on_backend=True), grant("g", "auth", "HTTPRoute", "default"))
    # not accepted: the route is not served at all (no request reaches svc unchecked)
    assert all(not vh.routes for lis in t.l7.listeners for vh in lis.virtual_hosts)
    cond = _cond(t, "Accepted")
    assert cond["status"] == "False" and "backendRef" in cond["message"]
