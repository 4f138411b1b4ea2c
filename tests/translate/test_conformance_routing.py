"""Replay the conformance suite's HTTP requests through the real kgw_l7 router, compiled
from translate()'s L7Config: which virtual host and route answers, and whether it
answers 404 / 500 / a redirect / a backend the test expects.

This checks translation (hostnames, listener isolation, precedence, matches, error
backends) without sockets; the proxy's own tests check what happens after routing.
gRPC calls are routed as the HTTP/2 POSTs they are. Groups that need traffic semantics
(timeouts, retries, mirrors, TLS handshakes, TCP) are skipped here.
"""

from __future__ import annotations

import json

import pytest

from controller.objects import ObjectKey
from controller.translate import Options, translate
from kgw_l7.router import RouterCache, split_target
from tests.translate.conformance_load import (conformance_dir, gateway_addresses, make_store,
                                              objects_for)
from tests.translate.test_conformance_status import MULTI_PHASE, _unsupported

ROOT = conformance_dir()
#: Tests whose HTTP expectations depend on something routing alone cannot show.
NOT_ROUTING = {
    "HTTPRouteRequestMirror", "HTTPRouteRequestMultipleMirrors", "HTTPRouteRequestPercentageMirror",
    "HTTPRouteTimeoutRequest", "HTTPRouteTimeoutBackendRequest", "HTTPRouteRetry",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteRetryWithTimeouts", "HTTPRouteWeight", "GRPCRouteWeight",
    "HTTPRouteHTTPSListenerDetectMisdirectedRequests",  # needs SNI vs Host (421) - the proxy's job
    "HTTPRouteServiceTypes",  # backend identity comes from hand-made EndpointSlices' pods
    "HTTPRouteReferenceGrant",  # its 500 case follows deleting the grant (multi-phase)
    # client certificates are checked in the TLS handshake (tests/l7/test_client_cert.py and
    # the conformance harness), not by the router
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayFrontendInvalidDefaultClientCertificateValidation",
}


def _cases() -> list:
    if ROOT is None:
        return [
            pytest.param(None, None, marks=pytest.mark.skip(reason="conformance data not found"))]
    data = json.loads((ROOT / "route_cases.json").read_text())
    out = []
    for name, case in sorted(data.items()):
        groups = [g for g in case["requestGroups"]
                  if g["protocol"] in ("http", "https", "grpc") and g["expect"] == "response"]
        if not groups:
            continue
        marks = []
        if _unsupported({"test": name, **case}) or name in MULTI_PHASE or name in NOT_ROUTING:
            marks.append(pytest.mark.skip(reason="not decidable by routing alone / unsupported"))
        out.append(pytest.param(case, groups, id=name, marks=marks))
    return out


def _listener(store, gw: dict, names: list[str]) -> dict:
    obj = store.get_key(ObjectKey("Gateway", gw["Namespace"], gw["Name"]))
    listeners = obj["spec"]["listeners"]
    if names:
        listeners = [lis for lis in listeners if lis["name"] in names] or listeners
    return listeners[0]


def _pods_of_services(objs: list[dict]) -> dict[str, set[str]]:
    """"ns/service" -> names of the Deployments whose pods the Service selects (pod names
    start with the Deployment's name, which is what the suite checks)."""
    deployments = [o for o in objs if o.get("kind") == "Deployment"]
    out: dict[str, set[str]] = {}
    for svc in (o for o in objs if o.get("kind") == "Service"):
        ns = svc["metadata"].get("namespace", "default")
        sel = (svc.get("spec") or {}).get("selector") or {}
        names = {svc["metadata"]["name"]}
        for d in deployments:
            labels = (((d.get("spec") or {}).get("template") or {}).get("metadata")
                      or {}).get("labels") or {}
            if sel and d["metadata"].get("namespace", "default") == ns and all(
                labels.get(k) == v for k, v in sel.items()):
                names.add(d["metadata"]["name"])
        out[f"{ns}/{svc['metadata']['name']}"] = names
    return out


@pytest.mark.parametrize("case,groups", _cases())
def test_routing(case: dict, groups: list) -> None:
    objs = objects_for(case, ROOT)
    pods = _pods_of_services(objs)
    store = make_store(objs)
    addrs = gateway_addresses(store)
    routers = RouterCache().build(translate(store, Options(gateway_addresses=addrs)).l7)
    addr_of = dict(addrs)
    failures = []
    for g in groups:
        gw = g["target"]["gateway"]
        addr = addr_of[f"{gw['Namespace']}/{gw['Name']}"]
        lis = _listener(store, gw, g["target"].get("listeners") or [])
        if lis["protocol"] not in ("HTTP", "HTTPS"):
            continue  # TLS passthrough: routed by the L4 plane
        port = int(lis["port"])
        router = routers.get(f"{addr}:{port}")
        for c in g["cases"]:
            req, exp = c["request"], c["expect"]
            if g["protocol"] == "grpc":
                # a gRPC call is an HTTP/2 POST to /service/method; UNIMPLEMENTED (12) = no route
                req = {"method": "POST", "path": req["rpc"], "host": req.get("authority"),
                       "headers": req.get("metadata")}
                code = exp.get("grpcCode", 0)
                exp = {**exp, "statusCodes": [200] if code == 0 else [404] if code == 12 else [0]}
                if code not in (0, 12):
                    continue
            if "<" in req.get("path", "/"):
                continue  # placeholders filled by the Go suite at run time
            codes = exp.get("statusCodes") or [200]
            what = (f"{req.get('method', 'GET')} {req.get('host', '')}{req.get('path', '/')} "
                    f"-> {codes}")
            host = (req.get("host") or addr).split(":")[0].lower().encode()
            path, query = split_target(req.get("path", "/").encode())
            headers = tuple((k.lower().encode(), str(v).encode())
                            for k, v in (req.get("headers") or {}).items())
            vh = router.vhost(host) if router else None
            route = vh.find(path, req.get("method", "GET").encode(), headers, query) if vh else None
            if 404 in codes:
                if route is not None:
                    failures.append(f"{what}: matched {route.rule.name}")
                continue
            if route is None:
                failures.append(f"{what}: no route")
                continue
            rule = route.rule
            if any(300 <= x < 400 for x in codes):
                r = rule.filters.redirect
                if r is None or r.status not in codes:
                    failures.append(f"{what}: no redirect in {rule.name}")
                elif "redirect" in exp and exp["redirect"].get("host") and r.hostname and \
                        r.hostname.decode() != exp["redirect"]["host"]:
                    failures.append(f"{what}: redirect host {r.hostname!r}")
                continue
            if 500 in codes:
                if not (rule.direct_status == 500 or not rule.backends
                        or all(b.error_status == 500 for b in rule.backends)):
                    failures.append(f"{what}: {rule.name} would not answer 500")
                continue
            if codes == [200] or 200 in codes:
                if rule.direct_status is not None or rule.filters.redirect is not None:
                    failures.append(
                        f"{what}: {rule.name} answers {rule.direct_status or 'redirect'}")
                    continue
                prefix, ns = exp.get("backendPodPrefix"), exp.get("backendNamespace")
                if prefix:
                    names = [b.name for b in rule.backends if b.error_status is None]
                    services = [n.rsplit(":", 1)[0] for n in names]
                    if not any(prefix in pods.get(svc, ()) and (not ns or svc.split("/")[0] == ns)
                               for svc in services):
                        failures.append(f"{what}: backends {names} do not lead to {ns}/{prefix}")
    assert not failures, "\n".join(failures)
