"""Step definitions for the upstream features (upstream-go/conformance/*/feature.go say
what each step asserts), bound to a standalone kgw (world.py). The feature files are read
where the suite keeps them (``KGW_INGRESS_SUITE``/features), unmodified."""

from __future__ import annotations

import os
import random
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pytest_bdd import given, parsers, scenarios, then, when

from conformance.ingress import client
from conformance.ingress.world import (STATUS_TIMEOUT_S, Kgw, Scenario, backends, eventually,
                                       self_signed, service)

SUITE = Path(os.environ.get("KGW_INGRESS_SUITE", "../shared/ingress-conformance"))
FEATURES = (SUITE / "features").resolve()
if not FEATURES.is_dir():
    pytest.skip(f"no Ingress conformance suite in {SUITE} (set KGW_INGRESS_SUITE)",
                allow_module_level=True)

scenarios(str(FEATURES))


@pytest.fixture(scope="session")
def kgw() -> Iterator[Kgw]:
    k = Kgw()
    try:
        k.start()
        yield k
    finally:
        k.stop()


@pytest.fixture
def sc(kgw: Kgw) -> Iterator[Scenario]:
    s = Scenario("")
    yield s
    if s.namespace:
        kgw.forget(s)


@pytest.fixture
def result() -> dict[str, Any]:
    return {}


def _namespace() -> str:
    return "conformance-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=6))


# -- Given ------------------------------------------------------------------------------


@given("a new random namespace")
def new_namespace(sc: Scenario) -> None:
    sc.namespace = _namespace()


@given(parsers.parse('a self-signed TLS secret named "{name}" for the "{host}" hostname'))
def tls_secret(sc: Scenario, name: str, host: str) -> None:
    import base64
    cert, key = self_signed([host])
    sc.secrets.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                       "metadata": {"name": name, "namespace": sc.namespace},
                       "data": {"tls.crt": base64.b64encode(cert).decode(),
                                "tls.key": base64.b64encode(key).decode()}})


def _apply_ingress(kgw: Kgw, sc: Scenario, ingress: dict) -> None:
    ingress.setdefault("metadata", {})["namespace"] = sc.namespace
    sc.ingress = ingress
    for name, (port_name, port) in backends(ingress).items():
        sc.services[name] = service(sc.namespace, name, port_name, port)
        kgw.start_pod(sc, name)
    kgw.publish(sc)


@given("an Ingress resource")
def ingress_resource(kgw: Kgw, sc: Scenario, docstring: str) -> None:
    _apply_ingress(kgw, sc, yaml.safe_load(docstring))


@given("an Ingress resource in a new random namespace")
def ingress_in_new_namespace(kgw: Kgw, sc: Scenario, docstring: str) -> None:
    sc.namespace = _namespace()
    _apply_ingress(kgw, sc, yaml.safe_load(docstring))


@given(parsers.parse('an Ingress resource named "{name}" with this spec:'))
def ingress_named(kgw: Kgw, sc: Scenario, name: str, docstring: str) -> None:
    _apply_ingress(kgw, sc, {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                             "metadata": {"name": name}, "spec": yaml.safe_load(docstring)})


# -- status -------------------------------------------------------------------------------


def _address(kgw: Kgw, sc: Scenario) -> str | None:
    assert sc.ingress is not None
    st = kgw.status_of(sc.namespace, sc.ingress["metadata"]["name"]) or {}
    lbs = (st.get("loadBalancer") or {}).get("ingress") or []
    return (lbs[0].get("ip") or lbs[0].get("hostname")) if lbs else None


@then("The Ingress status shows the IP address or FQDN where it is exposed")
def status_shows_address(kgw: Kgw, sc: Scenario, result: dict) -> None:
    result["address"] = eventually(lambda: _address(kgw, sc), STATUS_TIMEOUT_S,
                                   "the Ingress status shows an address")


@then("The Ingress status should not contain the IP address or FQDN")
def status_has_no_address(kgw: Kgw, sc: Scenario) -> None:
    # What kgw read is what it serves: once its Services are in the configuration the
    # Ingress was translated too, and would have its address by now.
    time.sleep(2.0)
    assert _address(kgw, sc) is None


@then(parsers.parse('The backend deployment "{name}" for the ingress resource is scaled to '
                    '{replicas:d}'))
def scaled(kgw: Kgw, sc: Scenario, name: str, replicas: int) -> None:
    while len(sc.pods.get(name, [])) < replicas:
        kgw.start_pod(sc, name)
    kgw.publish(sc)
    backend = f"{sc.namespace}/{name}:"

    def endpoints() -> bool:
        found = 0
        for lis in kgw.config_dump()["l7"]["listeners"]:
            for vh in lis["virtual_hosts"]:
                for r in vh["routes"]:
                    for b in r["rule"]["backends"]:
                        if b["name"].startswith(backend):
                            found = max(found, len(b["endpoints"]))
        return found == replicas
    eventually(endpoints, STATUS_TIMEOUT_S, f"{replicas} endpoints of {name} served")


# -- requests ------------------------------------------------------------------------------


def _send(kgw: Kgw, result: dict, method: str, url: str) -> None:
    scheme, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    result["captured"] = client.round_trip(method, scheme, host, path,
                                           result.get("address", "127.0.0.1"), kgw.ports)


@when(parsers.re(r'I send a "(?P<method>[^"]*)" request to http://"(?P<host>[^"]*)"/"'
                 r'(?P<path>[^"]*)"'))
def send_split(kgw: Kgw, result: dict, method: str, host: str, path: str) -> None:
    _send(kgw, result, method, f"http://{host}/{path}")


@when(parsers.re(r'I send a "(?P<method>[^"]*)" request to "(?P<url>[^"]*)"'))
def send_url(kgw: Kgw, result: dict, method: str, url: str) -> None:
    _send(kgw, result, method, url)


@when(parsers.parse('I send {count:d} requests to "{url}"'))
def send_many(kgw: Kgw, result: dict, count: int, url: str) -> None:
    by_status: dict[int, set[str]] = {}
    for _ in range(count):
        _send(kgw, result, "GET", url)
        c = result["captured"]
        by_status.setdefault(c.status, set()).add(c.request.get("pod", ""))
    result["by_status"] = by_status


# -- Then (each also a When: an "And" after a "When" is a When step, and host_rules.feature
# asserts that way) ---------------------------------------------------------------------


def _captured(result: dict) -> client.Captured:
    c = result.get("captured")
    assert isinstance(c, client.Captured), "no request was sent"
    return c


@then(parsers.parse("the response status-code must be {code:d}"))
@when(parsers.parse("the response status-code must be {code:d}"))
def status_code(result: dict, code: int) -> None:
    assert _captured(result).status == code


@then(parsers.parse('the response must be served by the "{name}" service'))
@when(parsers.parse('the response must be served by the "{name}" service'))
def served_by(result: dict, name: str) -> None:
    assert _captured(result).request.get("service") == name


@then(parsers.parse('the response proto must be "{proto}"'))
@when(parsers.parse('the response proto must be "{proto}"'))
def response_proto(result: dict, proto: str) -> None:
    assert _captured(result).proto == proto


@then(parsers.parse('the request method must be "{method}"'))
@when(parsers.parse('the request method must be "{method}"'))
def request_method(result: dict, method: str) -> None:
    assert _captured(result).request.get("method") == method


@then(parsers.parse('the request path must be "{path}"'))
@when(parsers.parse('the request path must be "{path}"'))
@then('the request path must be ""')
@when('the request path must be ""')
def request_path(result: dict, path: str = "") -> None:
    want = path if path.startswith("/") else "/" + path
    assert _captured(result).request.get("path") == want


@then(parsers.parse('the request proto must be "{proto}"'))
@when(parsers.parse('the request proto must be "{proto}"'))
def request_proto(result: dict, proto: str) -> None:
    assert _captured(result).request.get("proto") == proto


@then(parsers.parse('the request host must be "{host}"'))
@when(parsers.parse('the request host must be "{host}"'))
def request_host(result: dict, host: str) -> None:
    assert _captured(result).request.get("host") == host


def _rows(datatable: list[list[str]]) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in datatable[1:]]


@then("the response headers must contain <key> with matching <value>")
@when("the response headers must contain <key> with matching <value>")
def response_headers(result: dict, datatable: list[list[str]]) -> None:
    headers = _captured(result).headers
    for key, value in _rows(datatable):
        assert key in headers, f"response headers {headers} have no {key}"
        assert value == "*" or value in headers[key], (key, headers[key])


@then("the request headers must contain <key> with matching <value>")
@when("the request headers must contain <key> with matching <value>")
def request_headers(result: dict, datatable: list[list[str]]) -> None:
    headers = _captured(result).request.get("headers") or {}
    for key, value in _rows(datatable):
        assert key in headers, f"request headers {headers} have no {key}"
        assert value == "*" or value in headers[key], (key, headers[key])


@then(parsers.parse('the secure connection must verify the "{host}" hostname'))
@when(parsers.parse('the secure connection must verify the "{host}" hostname'))
def verifies_hostname(result: dict, host: str) -> None:
    c = _captured(result)
    assert c.tls_hostname == host
    assert c.certificate is not None and client.verify_hostname(c.certificate, host)


@then(parsers.parse("all the responses status-code must be {code:d} and the response body "
                    "should contain the IP address of {pods:d} different Kubernetes pods"))
@when(parsers.parse("all the responses status-code must be {code:d} and the response body "
                    "should contain the IP address of {pods:d} different Kubernetes pods"))
def all_responses(result: dict, code: int, pods: int) -> None:
    got = result.get("by_status") or {}
    assert code in got, f"no responses with status {code}: {sorted(got)}"
    assert len(got[code]) == pods, sorted(got[code])
