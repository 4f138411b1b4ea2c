"""The conformance harness's own logic: manifest rewriting, status-helper semantics,
replay rules and report shape. Fast, no processes, no sockets."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from conformance import requests as rq
from conformance.backends import NAME_ALPHABET, backend_of_pod, echo_command, pod_names
from conformance.features import SUPPORTED_FEATURES, missing_features, profile_supported
from conformance.loader import (UNUSABLE_ADDRESS, AddressBook, GATEWAY_CLASS_NAME, endpoint_slice,
                                is_echo_deployment, read_manifest, rewrite_gateway)
from conformance.replay import (TLS_CHECKS_CA, case_name, distribution_error,
                                fill_route_placeholders, tcp_expectation, with_request_id)
from conformance.report import FAILED, PASSED, SKIPPED, Report, TestResult
from conformance.runner import Options, plan
from conformance.scenarios import resolve_name_expressions
from conformance.status_checks import (CheckFailed, Fatal, HarnessGap, StatusChecker, Timeouts,
                                       conditions_match,
                                       fill_placeholders, find_condition, listeners_match,
                                       parents_match, route_has_condition, stale_conditions)

#: What kgw claimed before it served GRPCRoute: the claim and skip rules are tested with it.
WITHOUT_GRPC = SUPPORTED_FEATURES - {"GRPCRoute", "HTTPRouteBackendProtocolH2C"}


# -- manifests ----------------------------------------------------------------------

def test_placeholders_become_kgw_class_and_controller(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text('kind: GatewayClass\nmetadata: {name: x}\nspec: {controllerName: '
                 '"{GATEWAY_CONTROLLER_NAME}"}\n'
                 '---\nkind: Gateway\nmetadata: {name: g, namespace: n}\nspec: {gatewayClassName: '
                 '"{GATEWAY_CLASS_NAME}"}\n')
    gwc, gw = read_manifest(f)
    assert gwc["spec"]["controllerName"] == "kgw.dev/gateway-controller"
    assert gw["spec"]["gatewayClassName"] == GATEWAY_CLASS_NAME


def test_each_gateway_gets_its_own_stable_loopback_address() -> None:
    book = AddressBook()
    a = rewrite_gateway(
        {"kind": "Gateway", "metadata": {"name": "a", "namespace": "n"}, "spec": {}}, book)
    b = rewrite_gateway(
        {"kind": "Gateway", "metadata": {"name": "b", "namespace": "n"}, "spec": {}}, book)
    a2 = rewrite_gateway(
        {"kind": "Gateway", "metadata": {"name": "a", "namespace": "n"}, "spec": {}}, book)
    assert a["spec"]["addresses"] == [{"type": "IPAddress", "value": "127.1.0.1"}]
    assert b["spec"]["addresses"][0]["value"] == "127.1.0.2"
    assert a2["spec"]["addresses"] == a["spec"]["addresses"]


def test_gateway_with_its_own_addresses_is_left_alone() -> None:
    gw = {"kind": "Gateway", "metadata": {"name": "a", "namespace": "n"},
          "spec": {"addresses": [{"type": "IPAddress", "value": "10.0.0.1"}]}}
    assert rewrite_gateway(gw, AddressBook()) == gw


def test_static_address_placeholders_are_overlaid_as_upstream() -> None:
    """Upstream's applier: the invalid-type address kept first, then the unusable pool,
    then the usable one (here the Gateway's own loopback address)."""
    gw = {"kind": "Gateway", "metadata": {"name": "s", "namespace": "n"},
          "spec": {"addresses": [{"type": "test/fake-invalid-type", "value": "fake"},
                                 {"value": "PLACEHOLDER_UNUSABLE_ADDRS"},
                                 {"value": "PLACEHOLDER_USABLE_ADDRS"}]}}
    out = rewrite_gateway(gw, AddressBook())
    assert out["spec"]["addresses"] == [{"type": "test/fake-invalid-type", "value": "fake"},
                                        {"type": "IPAddress", "value": UNUSABLE_ADDRESS},
                                        {"type": "IPAddress", "value": "127.1.0.1"}]


def test_address_book_skips_broadcast_like_octets() -> None:
    import ipaddress
    book = AddressBook(ipaddress.IPv4Address("127.1.0.254"))
    assert book.address("n", "a") == "127.1.0.254"
    assert book.address("n", "b") == "127.1.1.1"


def test_endpoint_slice_names_ports_like_the_service() -> None:
    svc = {"kind": "Service", "metadata": {"name": "s", "namespace": "n"},
           "spec": {"ports": [{"name": "first-port", "port": 8080, "targetPort": 3000},
                              {"name": "second-port", "port": 8081, "targetPort": 3001,
                               "appProtocol": "kubernetes.io/h2c"}]}}
    es = endpoint_slice(svc, [("s-abc-def", "127.2.1.1")])
    assert es["metadata"]["labels"] == {"kubernetes.io/service-name": "s"}
    assert es["ports"] == [{"name": "first-port", "port": 3000, "protocol": "TCP"},
                           {"name": "second-port", "port": 3001, "protocol": "TCP",
                            "appProtocol": "kubernetes.io/h2c"}]
    assert es["endpoints"][0]["addresses"] == ["127.2.1.1"]
    assert es["endpoints"][0]["conditions"] == {"ready": True}


def test_only_echo_deployments_become_pods() -> None:
    def dep(image: str) -> dict:
        return {"kind": "Deployment",
                "spec": {"template": {"spec": {"containers": [{"image": image}]}}}}
    assert is_echo_deployment(dep("registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0"))
    assert not is_echo_deployment(dep("registry.k8s.io/coredns/coredns:v1.14.6"))


def test_pod_names_look_like_kubernetes_and_map_back_to_the_backend() -> None:
    names = pod_names("infra-backend-v1", 2, random.Random(1))
    assert len(set(names)) == 2
    for n in names:
        prefix, h1, h2 = n.rsplit("-", 2)
        assert prefix == "infra-backend-v1" and len(h1) == 10 and len(h2) == 5
        assert set(h1 + h2) <= set(NAME_ALPHABET)
        assert backend_of_pod(n) == "infra-backend-v1"


def test_name_expressions_resolve_against_the_tests_manifests() -> None:
    long = "gateway-name-maximum-length-" + "a" * (253 - 28)
    expr = (
        '<gatewayNameMaximumLengthPrefix + strings.Repeat("a", 253 - '
        'len(gatewayNameMaximumLengthPrefix))>')
    args = [{"Name": expr, "Namespace": "ns"}]
    assert resolve_name_expressions(args, ["other", long]) == [{"Name": long, "Namespace": "ns"}]
    assert fill_placeholders("<suite.ControllerName>") == "kgw.dev/gateway-controller"


# -- features and plan ---------------------------------------------------------------


def test_profiles_and_features() -> None:
    assert profile_supported("GATEWAY-HTTP")
    assert not profile_supported("GATEWAY-TCP", frozenset({"Gateway", "ReferenceGrant"}))
    assert missing_features(["Gateway", "HTTPRoute", "TLSRoute"],
                            frozenset({"Gateway", "HTTPRoute"})) == ["TLSRoute"]
    assert "HTTPRoute" in SUPPORTED_FEATURES


def _suite(tmp_path: Path, tests: list[dict]) -> object:
    import json
    from conformance.loader import load_suite
    (tmp_path / "cases").mkdir()
    (tmp_path / "manifests" / "base").mkdir(parents=True)
    (tmp_path / "manifests" / "base" / "manifests.yaml").write_text("")
    for t in tests:
        rec = {"test": t["name"], "features": t["features"], "profiles": t["profiles"],
               "provisional": t.get("provisional", False), "manifests": [], "statusChecks": [],
               "requestGroups": []}
        (tmp_path / "cases" / f"{t['name']}.json").write_text(json.dumps(rec))
    return load_suite(tmp_path)


def test_plan_skips_unclaimed_features_unsupported_profiles_and_unselected(tmp_path: Path) -> None:
    suite = _suite(tmp_path, [
        {"name": "A", "features": ["Gateway", "HTTPRoute"], "profiles": {"GATEWAY-HTTP": "core"}},
        {"name": "B", "features": ["Gateway", "HTTPRoute", "Nope"],
         "profiles": {"GATEWAY-HTTP": "extended"}},
        {"name": "C", "features": ["Gateway", "GRPCRoute"], "profiles": {"GATEWAY-GRPC": "core"}},
        {"name": "D", "features": ["Gateway"], "profiles": {"GATEWAY-HTTP": "core"},
         "provisional": True},
    ])
    p = plan(suite, Options(suite=tmp_path, supported=WITHOUT_GRPC))  # type: ignore[arg-type]
    assert [t.name for t in p.run] == ["A", "D"]  # provisional tests run by default, as upstream
    assert "Nope" in p.skipped["B"] and "not supported" in p.skipped["C"]
    p = plan(suite, Options(suite=tmp_path, run=["A"], skip_provisional=True))  # type: ignore[arg-type]
    assert [t.name for t in p.run] == ["A"] and p.skipped["D"] == "not selected (--run)"


def test_plan_passes_tests_upstream_returns_from_when_a_feature_is_claimed(tmp_path: Path) -> None:
    tls = ["Gateway", "TLSRoute"]
    suite = _suite(tmp_path, [
        {"name": "TLSRouteListenerTerminateNotSupported", "features": tls,
         "profiles": {"GATEWAY-TLS": "core"}},
        {"name": "TLSRouteListenerMixedTerminationNotSupported",
         "features": [*tls, "TLSRouteModeTerminate"], "profiles": {"GATEWAY-TLS": "extended"}},
    ])
    core = frozenset({"Gateway", "ReferenceGrant", "TLSRoute"})
    p = plan(suite, Options(suite=tmp_path, supported=core))  # type: ignore[arg-type]
    assert [t.name for t in p.run] == ["TLSRouteListenerTerminateNotSupported"]
    p = plan(suite, Options(suite=tmp_path, supported=core | {"TLSRouteModeTerminate"}))  # type: ignore[arg-type]
    assert [t.name for t in p.run] == ["TLSRouteListenerMixedTerminationNotSupported"]
    # as upstream: the test returns at once, a pass that checks nothing (said so)
    assert "returns at once" in p.passed["TLSRouteListenerTerminateNotSupported"]
    p = plan(suite, Options(suite=tmp_path, supported=core | {
        "TLSRouteModeTerminate", "TLSRouteModeMixed"}))  # type: ignore[arg-type]
    assert p.run == [] and sorted(p.passed) == ["TLSRouteListenerMixedTerminationNotSupported",
                                                "TLSRouteListenerTerminateNotSupported"]


# -- status helpers ------------------------------------------------------------------


def cond(t: str, s: str, r: str = "R", gen: int = 1) -> dict:
    return {"type": t, "status": s, "reason": r, "observedGeneration": gen}


def test_empty_reason_or_status_matches_any() -> None:
    conds = [cond("Accepted", "False", "NotAllowedByListeners")]
    assert find_condition(conds, "Accepted", "False") is None
    assert find_condition(conds, "Accepted", "") is None
    assert find_condition(conds, "Accepted", "False", "NoMatchingParent") is not None
    assert find_condition(conds, "Accepted", "True") is not None
    assert find_condition([], "Accepted", "True") is not None


def test_stale_conditions_name_the_lagging_ones() -> None:
    obj = {"metadata": {"generation": 2}}
    assert stale_conditions(obj, [cond("Accepted", "True", gen=2)]) is None
    assert "Programmed" in stale_conditions(
        obj, [cond("Accepted", "True", gen=2), cond("Programmed", "True", gen=1)])
    assert stale_conditions(obj, []) is None  # upstream: nothing to be stale


def test_conditions_match_needs_as_many_conditions_as_expected() -> None:
    assert conditions_match([{"Type": "A", "Status": "True"}, {"Type": "B", "Status": "True"}],
                            [cond("A", "True")]) is not None


def parent(name: str, ns: str | None, conds: list[dict],
           group: str | None = "gateway.networking.k8s.io",
           kind: str | None = "Gateway", controller: str = "kgw.dev/gateway-controller") -> dict:
    ref = {"name": name}
    if group is not None:
        ref["group"] = group
    if kind is not None:
        ref["kind"] = kind
    if ns is not None:
        ref["namespace"] = ns
    return {"parentRef": ref, "controllerName": controller, "conditions": conds}


EXPECTED = [{"ParentRef": {"Group": "gateway.networking.k8s.io", "Kind": "Gateway", "Name": "gw",
                           "Namespace": "infra", "SectionName": ""},
             "ControllerName": "kgw.dev/gateway-controller",
             "Conditions": [{"Type": "Accepted", "Status": "True", "Reason": "Accepted"}]}]


def test_parents_need_explicit_group_and_kind_and_the_controller_name() -> None:
    ok = [parent("gw", "infra", [cond("Accepted", "True", "Accepted")])]
    assert parents_match(EXPECTED, ok, namespace_required=True) is None
    assert parents_match(EXPECTED, [
        parent("gw", "infra", [cond("Accepted", "True", "Accepted")], group=None)],
                         True) is not None
    assert parents_match(EXPECTED,
                         [parent("gw", "infra", [cond("Accepted", "True", "Accepted")], kind=None)],
                         True) is not None
    assert parents_match(EXPECTED, [parent("gw", "infra", [cond("Accepted", "True", "Accepted")],
                                           controller="other")], True) is not None
    assert parents_match(EXPECTED, [parent("gw", "infra", [cond("Accepted", "True", "Other")])],
                         True) is not None


def test_parent_namespace_may_be_omitted_only_for_same_namespace_routes() -> None:
    omitted = [parent("gw", None, [cond("Accepted", "True", "Accepted")])]
    assert parents_match(EXPECTED, omitted, namespace_required=False) is None
    assert parents_match(EXPECTED, omitted, namespace_required=True) is not None
    wrong = [parent("gw", "elsewhere", [cond("Accepted", "True", "Accepted")])]
    assert parents_match(EXPECTED, wrong, namespace_required=False) is not None


def test_other_parents_may_exist_in_any_order() -> None:
    actual = [parent("other", "infra", [cond("Accepted", "True", "Accepted")]),
              parent("gw", "infra", [cond("Accepted", "True", "Accepted")])]
    assert parents_match(EXPECTED, actual, True) is None
    assert parents_match(EXPECTED, [], True) is not None


def test_route_condition_requires_latest_generation_on_every_parent() -> None:
    route = {"metadata": {"generation": 2}, "status": {"parents": [
        parent("gw", "infra", [cond("ResolvedRefs", "True", "ResolvedRefs", gen=2)]),
        parent("other", "infra", [cond("Accepted", "True", gen=1)])]}}
    assert "generation" in route_has_condition(route, ("infra", "gw"),
                                               {"Type": "ResolvedRefs", "Status": "True",
                                                "Reason": "ResolvedRefs"})
    route["status"]["parents"][1]["conditions"][0]["observedGeneration"] = 2
    assert route_has_condition(route, ("infra", "gw"),
                               {"Type": "ResolvedRefs", "Status": "True",
                                "Reason": "ResolvedRefs"}) is None
    assert route_has_condition(route, ("infra", "missing"),
                               {"Type": "ResolvedRefs", "Status": "True"}) is not None


def test_listeners_match_by_name_with_supported_kinds_as_superset() -> None:
    expected = [{"Name": "http",
                 "SupportedKinds": [{"Group": "gateway.networking.k8s.io", "Kind": "HTTPRoute"}],
                 "Conditions": [{"Type": "Accepted", "Status": "True"}], "AttachedRoutes": 1}]
    actual = [{"name": "http", "attachedRoutes": 1, "conditions": [cond("Accepted", "True")],
               "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
                                  {"kind": "HTTPRoute"}]}]
    assert listeners_match(expected, actual) is None
    actual[0]["attachedRoutes"] = 2
    assert "attachedRoutes" in listeners_match(expected, actual)
    actual[0]["attachedRoutes"] = 1
    actual[0]["supportedKinds"] = [{"kind": "GRPCRoute"}]
    assert "lacks" in listeners_match(expected, actual)
    assert listeners_match([dict(expected[0], SupportedKinds=[])], [dict(actual[0])]) is not None
    assert listeners_match(expected, actual + [dict(actual[0], name="https")]) is not None


class FakeAdmin:
    def __init__(self, snapshots: list[dict]) -> None:
        self.snapshots = snapshots

    def statuses(self) -> dict:
        return self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0]

    def get_json(self, path: str) -> dict:
        assert path == "/problems"
        return {"problems": [{"text": "gw.yaml: Gateway infra/missing: spec.listeners: required"}]}


def gw_status(gen: int, conds: list[dict], obs: int | None = None) -> dict:
    return {("Gateway", "infra", "gw"): {"metadata": {"generation": gen},
                                         "status": {"conditions": [
                                             dict(c, observedGeneration=obs or gen) for c in conds],
                                                    "addresses": [{"type": "IPAddress",
                                                                   "value": "127.1.0.3"}]}}}


def test_polling_waits_for_the_expectation_then_passes() -> None:
    admin = FakeAdmin([{}, gw_status(1, [cond("Programmed", "False")]),
                       gw_status(1, [cond("Programmed", "True")])])
    chk = StatusChecker(admin, Timeouts(2.0), interval=0.001)  # type: ignore[arg-type]
    chk.GatewayMustHaveCondition({"Name": "gw", "Namespace": "infra"},
                                 {"Type": "Programmed", "Status": "True"})


def test_polling_gives_up_with_the_last_reason() -> None:
    admin = FakeAdmin([gw_status(1, [cond("Programmed", "False", "Pending")])])
    chk = StatusChecker(admin, Timeouts(0.05), interval=0.001)  # type: ignore[arg-type]
    with pytest.raises(CheckFailed, match="Pending"):
        chk.GatewayMustHaveCondition({"Name": "gw", "Namespace": "infra"},
                                     {"Type": "Programmed", "Status": "True"})


def test_gateway_condition_with_stale_generation_fails_at_once() -> None:
    admin = FakeAdmin([gw_status(2, [cond("Programmed", "True")], obs=1)])
    chk = StatusChecker(admin, Timeouts(60.0), interval=0.001)  # type: ignore[arg-type]
    with pytest.raises(CheckFailed, match="generation"):
        chk.GatewayMustHaveCondition({"Name": "gw", "Namespace": "infra"},
                                     {"Type": "Programmed", "Status": "True"})
    assert isinstance(Fatal("x"), str)


def test_gateway_address_uses_status_address_and_spec_port() -> None:
    admin = FakeAdmin([gw_status(1, [cond("Accepted", "True")])])
    listeners = [{"name": "http", "port": 80}, {"name": "alt", "port": 8080}]
    chk = StatusChecker(admin, Timeouts(1.0), interval=0.001, spec_listeners=lambda nn: listeners)  # type: ignore[arg-type]
    assert chk.WaitForGatewayAddress(
        {"gateway": {"Name": "gw", "Namespace": "infra"}}) == "127.1.0.3:80"
    assert chk.WaitForGatewayAddress({"gateway": {"Name": "gw", "Namespace": "infra"},
                                      "listeners": ["alt"]}) == "127.1.0.3:8080"


def test_object_without_status_says_whether_kgw_refused_it() -> None:
    chk = StatusChecker(FakeAdmin([{}]), Timeouts(0.02), interval=0.001)  # type: ignore[arg-type]
    with pytest.raises(CheckFailed, match="kgw refused it: .*spec.listeners"):
        chk.GatewayMustHaveLatestConditions({"Name": "missing", "Namespace": "infra"})


def test_address_without_type_does_not_count() -> None:
    st = gw_status(1, [cond("Accepted", "True")])
    st[("Gateway", "infra", "gw")]["status"]["addresses"] = [{"value": "127.1.0.3"}]
    chk = StatusChecker(FakeAdmin([st]), Timeouts(0.05), interval=0.001,  # type: ignore[arg-type]
                        spec_listeners=lambda nn: [{"name": "http", "port": 80}])
    with pytest.raises(CheckFailed, match="no typed address"):
        chk.WaitForGatewayAddress({"gateway": {"Name": "gw", "Namespace": "infra"}})


# -- replay -------------------------------------------------------------------------


def req(**kw: object) -> rq.Request:
    base = dict(method="GET", scheme="http", address="127.1.0.1:80", path="/")
    base.update(kw)
    return rq.Request(**base)  # type: ignore[arg-type]


def echo(path: str = "/", pod: str = "infra-backend-v1-abcdefghij-klmno",
         ns: str = "gateway-conformance-infra",
         headers: dict | None = None, method: str = "GET", host: str = "") -> rq.CapturedRequest:
    return rq.CapturedRequest(path=path, method=method, namespace=ns, pod=pod,
                              headers=headers or {}, host=host)


def resp(status: int = 200, headers: dict | None = None,
         redirect: rq.Redirect | None = None) -> rq.CapturedResponse:
    return rq.CapturedResponse(status, headers or {}, redirect=redirect)


EXPECT = {"statusCodes": [200], "backendRequest": {"path": "/", "method": "GET"},
          "backendPodPrefix": "infra-backend-v1", "backendNamespace": "gateway-conformance-infra"}


def test_host_header_drops_only_the_schemes_default_port() -> None:
    assert req(address="127.1.0.1:80").authority == "127.1.0.1"
    assert req(address="127.1.0.1:8080").authority == "127.1.0.1:8080"
    assert req(scheme="https", address="127.1.0.1:443").authority == "127.1.0.1"
    assert req(scheme="http", address="127.1.0.1:443").authority == "127.1.0.1:443"


def test_matching_echo_passes() -> None:
    assert rq.compare(req(), echo(), resp(), EXPECT) is None


def test_path_is_compared_byte_for_byte_with_the_query() -> None:
    e = dict(EXPECT, backendRequest={"path": "/a?x=1", "method": "GET"})
    assert rq.compare(req(path="/a?x=1"), echo("/a?x=1"), resp(), e) is None
    assert "path" in rq.compare(req(path="/a?x=1"), echo("/a"), resp(), e)
    assert "path" in rq.compare(req(path="/a?x=1"), echo("/a?x=1 "), resp(), e)


def test_status_method_namespace_and_pod_prefix() -> None:
    assert "status code" in rq.compare(req(), echo(), resp(404), EXPECT)
    assert "method" in rq.compare(req(), echo(method="POST"), resp(), EXPECT)
    assert "namespace" in rq.compare(req(), echo(ns="other"), resp(), EXPECT)
    assert "pod name" in rq.compare(req(), echo(pod="infra-backend-v2-abcdefghij-klmno"), resp(),
                                    EXPECT)


def test_timeout_codes_are_interchangeable_and_end_the_comparison() -> None:
    e = {"statusCodes": [504]}
    assert rq.compare(req(), echo(), resp(408), e) is None
    assert rq.compare(req(), echo(), resp(504), {"statusCodes": [408]}) is None
    assert rq.compare(req(), echo(), resp(500), e) is not None


def test_headers_are_joined_with_commas_and_case_insensitive() -> None:
    e = dict(EXPECT, backendRequest={"path": "/", "method": "GET",
                                     "headers": {
                                         "X-Header-Add-Append": "append-val-1,header-val-2"},
                                     "absentHeaders": ["X-Header-Remove"]})
    ok = echo(headers={"X-Header-Add-Append": ["append-val-1", "header-val-2"]})
    assert rq.compare(req(), ok, resp(), e) is None
    spaced = echo(headers={"X-Header-Add-Append": ["append-val-1, header-val-2"]})
    assert "append-val-1, header-val-2" in rq.compare(req(), spaced, resp(), e)
    present = echo(
        headers={"X-Header-Add-Append": ["append-val-1", "header-val-2"], "x-header-remove": ["v"]})
    assert "not be set" in rq.compare(req(), present, resp(), e)


def test_host_is_checked_only_when_given() -> None:
    e = dict(EXPECT, backendRequest={"path": "/", "method": "GET", "host": "rewrite.example"})
    assert rq.compare(req(), echo(host="rewrite.example"), resp(), e) is None
    assert "host" in rq.compare(req(), echo(host="orig"), resp(), e)
    assert rq.compare(req(), echo(host="anything"), resp(), EXPECT) is None


def test_without_recorded_backend_request_the_sent_request_is_expected() -> None:
    e = {"statusCodes": [200], "backendPodPrefix": "",
         "backendNamespace": "gateway-conformance-infra"}
    sent = {"method": "GET", "path": "/x", "headers": {"X-A": "1"}}
    assert rq.compare(req(path="/x"), echo("/x", headers={"X-A": ["1"]}), resp(), e,
                      sent=sent) is None
    assert rq.compare(req(path="/x"), echo("/x"), resp(), e, sent=sent) is not None


def test_response_headers_and_one_of_with_whitespace_rule() -> None:
    e = dict(EXPECT, responseHeaders={"X-Set": "v"}, responseAbsentHeaders=["X-Gone"])
    assert rq.compare(req(), echo(), resp(headers={"x-set": ["v"]}), e) is None
    assert "X-Gone" in rq.compare(req(), echo(), resp(headers={"x-set": ["v"], "x-gone": ["1"]}), e)
    cors = {"statusCodes": [200, 204], "backendRequest": {"path": "", "method": "OPTIONS"},
            "backendNamespace": "",
            "responseHeaderOneOf": {
                "access-control-allow-methods": ["GET, OPTIONS", "OPTIONS, GET"]},
            "ignoreWhitespaceInHeaderValues": True}
    preflight = rq.CapturedRequest(method="OPTIONS")  # gateway-generated: not the echo's JSON
    r = req(method="OPTIONS", path="/cors-1")
    assert rq.compare(r, preflight, resp(204, {"access-control-allow-methods": ["OPTIONS,GET"]}),
                      cors) is None
    assert rq.compare(r, preflight, resp(204, {"access-control-allow-methods": ["GET"]}),
                      cors) is not None
    assert "path" in rq.compare(r, echo("/cors-1", method="OPTIONS"), resp(200), cors)
    # upstream's IgnoreWhitespace covers single-value headers too, and only spaces
    single = dict(cors, responseHeaders={"access-control-allow-headers": "x-a, x-b"})
    del single["responseHeaderOneOf"]
    assert rq.compare(r, preflight, resp(204, {"access-control-allow-headers": ["x-a,x-b"]}),
                      single) is None
    assert rq.compare(r, preflight, resp(204, {"access-control-allow-headers": ["x-a,\tx-b"]}),
                      single) is not None


def test_redirect_defaults_follow_upstream() -> None:
    e = {"statusCodes": [302], "redirect": {"scheme": "https", "host": "example.org"}}
    r = req(path="/p?q=1")
    ok = rq.Redirect("https", "example.org", "", "/p")
    assert rq.compare(r, echo(), resp(302, redirect=ok), e) is None
    assert "port" in rq.compare(
        r, echo(), resp(302, redirect=rq.Redirect("https", "example.org", "8443", "/p")), e)
    assert rq.compare(
        r, echo(), resp(302, redirect=rq.Redirect("https", "example.org", "443", "/p")), e) is None
    assert "path" in rq.compare(
        r, echo(), resp(302, redirect=rq.Redirect("https", "example.org", "", "/q")), e)
    e8080 = {"statusCodes": [302],
             "redirect": {"scheme": "http", "host": "example.org", "port": "8080"}}
    assert rq.compare(r, echo(), resp(
        302, redirect=rq.Redirect("http", "example.org", "8080", "/p")), e8080) is None
    assert rq.compare(r, echo(), resp(302, redirect=rq.Redirect("http", "example.org", "", "/p")),
                      e8080) is not None


def test_location_parsing_keeps_case_and_resolves_relative() -> None:
    assert rq.parse_location("http://a/b?c", "https://Example.ORG:8443/x%20y") == rq.Redirect(
        "https", "Example.ORG", "8443", "/x y")
    assert rq.parse_location("http://gw:8080/b", "/c") == rq.Redirect("http", "gw", "8080", "/c")


def test_only_exact_json_content_type_is_parsed() -> None:
    r = req()
    body = b'{"path": "/", "method": "GET", "namespace": "n", "pod": "p", "headers": {"A": ["1"]}}'
    assert rq.capture_request(
        r, rq.CapturedResponse(200, {"content-type": ["application/json"]}, body)).pod == "p"
    other = rq.capture_request(
        r, rq.CapturedResponse(200, {"content-type": ["application/json; charset=utf-8"]}, body))
    assert other.pod == "" and other.path == "" and other.method == "GET"
    with pytest.raises(rq.RequestError):
        rq.capture_request(
            r, rq.CapturedResponse(200, {"content-type": ["application/json"]}, b"{nope"))


def test_go_hostname_matching() -> None:
    assert rq.go_match_hostname("*.org", "example.org")
    assert not rq.go_match_hostname("*", "example.org")
    assert not rq.go_match_hostname("*.org", "a.example.org")
    assert rq.go_match_hostname("*.wildcard.org", "third-example.wildcard.org")
    assert rq.go_match_hostname("Example.org", "example.org")


def test_echo_set_header_and_canonical_names() -> None:
    assert rq.echo_set_header({"X-A": "1", "b": "2"}) == "X-A:1,b:2"
    assert rq.echo_set_header(None) == ""
    assert rq.canonical_header("x-lowercase-add") == "X-Lowercase-Add"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_three_consecutive_successes_are_needed() -> None:
    results = iter([None, None, "bad", None, None, None])
    clock = Clock()
    attempts = rq.wait_consistent(lambda: next(results), clock=clock, sleep=clock.sleep)
    assert attempts == 6


def test_consistency_gives_up_after_the_limit_with_the_last_reason() -> None:
    clock = Clock()
    with pytest.raises(rq.NotConsistent, match="still bad"):
        rq.wait_consistent(lambda: "still bad", limit=30.0, clock=clock, sleep=clock.sleep)
    assert 29.9 <= clock.t <= 30.2  # polled every 100 ms until 30 s


def test_case_names_and_request_ids() -> None:
    assert case_name(0, {"request": {"path": "/x"}, "expect": {"backendPodPrefix": "b"}}) == \
        "0 request to '/x' should go to b"
    assert case_name(
        1, {"request": {"path": "/x", "host": "h"}, "expect": {"statusCodes": [404]}}) == \
        "1 request to 'h/x' should receive a 404"
    assert with_request_id("/m", "id") == "/m?gateway-api-conformance-request-id=id"
    assert with_request_id("/m?a=1", "id") == "/m?a=1&gateway-api-conformance-request-id=id"


# -- tcp / tls passthrough ------------------------------------------------------------


def test_tcp_echo_containers_run_the_tcp_mode_on_their_ports() -> None:
    args, ports = echo_command({}, "127.2.1.1", "p-a-b", "ns")
    assert "--port" in args and "--tcp-port" not in args and ports == (3000, 3001)  # HTTP and h2c
    args, ports = echo_command({"TCP_ECHO_SERVER": "1"}, "127.2.1.1", "p-a-b", "ns")
    # no certificate: plain only
    assert args[args.index("--tcp-port") + 1] == "3000" and ports == (3000,)
    env = {"TCP_ECHO_SERVER": "1", "TCP_PORT": "4000", "TLS_PORT": "9443",
           "TLS_SERVER_CERT": "/p/crt", "TLS_SERVER_PRIV_KEY": "/p/key"}
    args, ports = echo_command(env, "127.2.1.1", "p-a-b", "ns")
    assert args[args.index("--tcp-port") + 1] == "4000" and args[args.index("--tls-port")
                                                                 + 1] == "9443"
    assert ports == (4000, 9443)
    with pytest.raises(RuntimeError, match="TCP_PORT"):
        echo_command({"TCP_ECHO_SERVER": "1", "TCP_PORT": "x"}, "127.2.1.1", "p-a-b", "ns")


def _payload(**kw: object) -> dict:
    return {"namespace": "infra", "pod": "tcp-backend-abc-12345", "isTLS": False, **kw}


def test_tcp_payload_checks_namespace_and_backend_prefix_with_its_dash() -> None:
    exp = rq.TcpExpectation(backend="tcp-backend", namespace="infra")
    assert rq.validate_tcp_payload(_payload(), exp) is None
    assert "namespace does not match" in rq.validate_tcp_payload(_payload(namespace="web"), exp)
    # the prefix is the backend name plus its dash: "tcp-backendx-..." is another backend's pod
    assert "pod prefix" in rq.validate_tcp_payload(_payload(pod="tcp-backendx-abc-12345"), exp)
    assert rq.validate_tcp_payload(["not", "an", "object"], exp) is not None


def test_tcp_payload_checks_server_name_and_alpn_only_when_expected() -> None:
    exp = rq.TcpExpectation(backend="tcp-backend", namespace="infra", backend_is_tls=True,
                            hostname="abc.example.com")
    assert "no TLS assertions" in rq.validate_tcp_payload(_payload(), exp)
    assert "server name does not match" in rq.validate_tcp_payload(
        _payload(tls={"serverName": "other.example.com"}), exp)
    assert rq.validate_tcp_payload(_payload(tls={"serverName": "abc.example.com"}), exp) is None
    alpn = rq.TcpExpectation(backend="tcp-backend", namespace="infra", tls_protocol="h2")
    assert "TLS protocol does not match" in rq.validate_tcp_payload(
        _payload(tls={"serverName": ""}), alpn)
    assert rq.validate_tcp_payload(_payload(tls={"negotiatedProtocol": "h2"}), alpn) is None


def test_tcp_cases_become_expectations_and_unresolved_names_are_gaps() -> None:
    exp = tcp_expectation({"Backend": "tcp-backend", "Namespace": "infra", "BackendIsTLS": True,
                           "Hostname": "abc.example.com"})
    assert exp == rq.TcpExpectation("tcp-backend", "infra", True, "abc.example.com", "")
    with pytest.raises(HarnessGap):
        tcp_expectation({"Backend": "tcp-backend", "Namespace": "infra",
                         "Hostname": "<hostnamesPassthrough[0]>"})
    with pytest.raises(HarnessGap):
        tcp_expectation({"Namespace": "infra"})


def _tls_group() -> dict:
    return {"protocol": "tcp", "useTLS": True, "tlsServerName": "<hostnames[0]>",
            "trustedServerCert": "<[]byte(caString)>",
            "target": {"gateway": {"Name": "gw", "Namespace": "infra"},
                       "routes": [{"Name": "r", "Namespace": "infra"}]},
            "cases": [{"BackendIsTLS": True, "Backend": "tcp-backend", "Namespace": "infra",
                       "Hostname": "<hostnames[0]>"}]}


def test_route_placeholders_resolve_from_the_tlsroutes_and_the_ca() -> None:
    objects = [{"kind": "TLSRoute", "metadata": {"name": "r", "namespace": "infra"},
                "spec": {"hostnames": ["abc.example.com", "x.example.com"]}},
               {"kind": "TLSRoute", "metadata": {"name": "r", "namespace": "other"},
                "spec": {"hostnames": ["wrong.example.com"]}},
               {"kind": "TLSRoute",
                "metadata": {"name": "mixed-terminateroute", "namespace": "infra"},
                "spec": {"hostnames": ["tls.example.com"]}}]
    g = fill_route_placeholders(_tls_group(), objects)
    assert g["tlsServerName"] == "abc.example.com" and g["cases"][0][
        "Hostname"] == "abc.example.com"
    # caString: upstream's ca.crt of tls-checks-ca-certificate, passthrough or terminate alike
    assert g["trustedServerCert"]["fn"] == "kubernetes.GetConfigMapData"
    assert g["trustedServerCert"]["args"][-1] == {"Name": TLS_CHECKS_CA,
                                                  "Namespace": "gateway-conformance-infra"}
    assert _tls_group()["tlsServerName"] == "<hostnames[0]>"  # the record is not changed
    # a Go variable named for a route (mixed mode's hostnamesTerminate)
    named = dict(_tls_group(), tlsServerName="<hostnamesTerminate[0]>")
    assert fill_route_placeholders(named, objects)["tlsServerName"] == "tls.example.com"
    unknown = dict(_tls_group(), tlsServerName="<hostnamesOther[0]>")
    assert fill_route_placeholders(unknown, objects)["tlsServerName"] == "<hostnamesOther[0]>"
    # no such route: left as recorded
    assert fill_route_placeholders(_tls_group(), [])["tlsServerName"] == "<hostnames[0]>"
    http = {"protocol": "http", "tlsServerName": "<hostnames[0]>"}
    assert fill_route_placeholders(http, objects) is http


def test_distribution_within_tolerance_and_weight_zero_gets_nothing() -> None:
    weights = {"tcp-backend-v1": 0.7, "tcp-backend-v2": 0.3, "tcp-backend-v3": 0.0}
    pods = ["tcp-backend-v1-abc-1"] * 68 + ["tcp-backend-v2-abc-2"] * 32
    assert distribution_error(lambda i: pods[i], weights, 100, 4, 0.05) is None
    skewed = ["tcp-backend-v1-abc-1"] * 80 + ["tcp-backend-v2-abc-2"] * 20
    why = distribution_error(lambda i: skewed[i], weights, 100, 4, 0.05)
    assert "tcp-backend-v1" in why and "tcp-backend-v2" in why
    zero = ["tcp-backend-v1-abc-1"] * 70 + ["tcp-backend-v2-abc-2"] * 29 + ["tcp-backend-v3-abc-3"]
    assert "expected 2 backends to receive traffic, but got 3" in distribution_error(
        lambda i: zero[i], weights, 100, 4, 0.05)
    none = ["tcp-backend-v1-abc-1"] * 100
    assert "expect traffic to hit backend 'tcp-backend-v2'" in distribution_error(
        lambda i: none[i], {"tcp-backend-v1": 0.98, "tcp-backend-v2": 0.02}, 100, 4, 0.05)


def test_distribution_maps_pods_to_backends_by_exact_name() -> None:
    """Upstream extractBackendName: a pod of infra-backend-v1x (or of a Deployment whose
    name merely starts like a weighted backend's) is an unexpected pod, not v1's."""
    weights = {"tcp-backend-v1": 1.0}
    assert "unexpected pod" in distribution_error(lambda i: "tcp-backend-v1x-abc-1", weights, 10, 2,
                                                  0.05)
    assert "unexpected pod" in distribution_error(lambda i: "tcp-backend-v1-extra-abc-1", weights,
                                                  10, 2, 0.05)
    assert backend_of_pod("short-name") == "short-name"


def test_distribution_fails_on_a_failed_probe() -> None:
    weights = {"tcp-backend-v1": 1.0}

    def broken(i: int) -> str:
        raise rq.RequestError("EOF after b''")

    assert "EOF" in distribution_error(broken, weights, 10, 2, 0.05)


# -- report --------------------------------------------------------------------------


def test_report_counts_levels_and_lists_first_failures() -> None:
    rep = Report()
    rep.add_test("A", {"GATEWAY-HTTP": "core"}, ["Gateway", "HTTPRoute"])
    rep.add_test("B", {"GATEWAY-HTTP": "core"}, ["Gateway", "HTTPRoute"])
    rep.add_test("C", {"GATEWAY-HTTP": "extended"}, ["Gateway", "HTTPRoute", "HTTPRouteCORS"])
    rep.add_test("D", {"GATEWAY-HTTP": "extended"},
                 ["Gateway", "HTTPRoute", "GatewayInfrastructurePropagation"])
    rep.record(TestResult("A", PASSED))
    rep.record(TestResult("B", FAILED, "expected status code 200, got 404", "0 request to '/'"))
    rep.record(TestResult("C", PASSED))
    rep.record(TestResult("D", SKIPPED, "unsupported features: GatewayInfrastructurePropagation"))
    assert rep.summary_lines(["GATEWAY-HTTP"]) == [
        "GATEWAY-HTTP core 1/2 extended 1/2  [failed: core 1, extended 0]"]
    doc = yaml.safe_load(
        rep.to_yaml(["GATEWAY-HTTP"], version="0.1.0", date="2026-01-01T00:00:00Z"))
    assert doc["kind"] == "ConformanceReport" and doc[
        "apiVersion"] == "gateway.networking.k8s.io/v1"
    prof = doc["profiles"][0]
    assert prof["name"] == "GATEWAY-HTTP"
    assert prof["core"]["result"] == "failure"
    assert prof["core"]["statistics"] == {"Passed": 1, "Failed": 1, "Skipped": 0}
    assert prof["core"]["failedTests"] == ["B"]
    assert prof["core"]["failures"] == [{"test": "B", "case": "0 request to '/'",
                                         "message": "expected status code 200, got 404"}]
    assert prof["extended"]["result"] == "partial"
    assert prof["extended"]["skippedTests"] == ["D"]
    assert "GatewayInfrastructurePropagation" in prof["extended"]["unsupportedFeatures"]
    assert "HTTPRouteCORS" in prof["extended"]["supportedFeatures"]


def test_unsupported_profile_is_reported_skipped() -> None:
    rep = Report(supported=frozenset({"Gateway", "HTTPRoute", "ReferenceGrant"}))
    rep.add_test("T", {"GATEWAY-TCP": "core"}, ["Gateway", "TCPRoute"])
    rep.record(TestResult("T", SKIPPED, "profile not supported"))
    line = rep.summary_lines(["GATEWAY-TCP"])[0]
    assert line.startswith("GATEWAY-TCP core 0/1 extended 0/0") and "not supported" in line
    assert rep.to_dict(["GATEWAY-TCP"], version="x")["profiles"][0]["core"]["result"] == "skipped"


def test_generic_tests_count_as_skipped_in_unsupported_profiles() -> None:
    rep = Report(supported=frozenset({"Gateway", "HTTPRoute", "ReferenceGrant"}))
    rep.add_test("G", {"GATEWAY-HTTP": "core", "GATEWAY-TLS": "core"}, ["Gateway"])
    rep.record(TestResult("G", PASSED))
    assert rep.counts("GATEWAY-HTTP", "core") == (1, 0, 0, 1)
    assert rep.counts("GATEWAY-TLS", "core") == (0, 0, 1, 1)
    tls = rep.to_dict(["GATEWAY-TLS"], version="x")["profiles"][0]["core"]
    assert "TLSRoute" in tls["skipReasons"]["G"]


def test_gzip_is_undone_like_gos_transport() -> None:
    import gzip
    body = gzip.compress(b'{"pod": "p"}')
    res = rq.CapturedResponse(200,
                              {"content-encoding": ["gzip"], "content-length": [str(len(body))],
                               "content-type": ["application/json"]}, body)
    out = rq._transparent_gzip(req(), res)
    assert out.body == b'{"pod": "p"}' and "content-encoding" not in out.headers
    asked_itself = req(headers=(("Accept-Encoding", "gzip"),))
    kept = rq.CapturedResponse(200, {"content-encoding": ["gzip"]}, body)
    assert rq._transparent_gzip(asked_itself, kept).body == body


def test_kgw_errors_are_summarised_with_the_exception_they_end_in(tmp_path: Path) -> None:
    from conformance.runner import Runner
    (tmp_path / "suite").mkdir()
    suite = _suite(tmp_path / "suite", [])
    runner = Runner(suite, Options(suite=tmp_path / "suite"), out=lambda m: None)  # type: ignore[arg-type]
    runner.workdir = tmp_path
    (tmp_path / "kgw.log").write_text(
        "2026-11-26 09:34:03,880 ERROR asyncio: Task exception was never retrieved\n"
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
        "ValueError: cannot open a UDP handle\n"
        "2026-11-26 09:34:04,023 INFO kgw.l7.plane: L7 plane started\n"
        "2026-11-26 09:34:05,000 ERROR kgw: l7 data plane failed to apply generation 3\n")
    assert runner._kgw_errors() == [
        "asyncio: Task exception was never retrieved -- ValueError: cannot open a UDP handle",
        "kgw: l7 data plane failed to apply generation 3"]


def test_backend_sni_is_checked_when_the_case_names_one() -> None:
    defaulted = dict(EXPECT, backendRequest={"path": "/", "method": "GET",
                                             "_source": "defaults to Request (...)"})
    sent = {"method": "GET", "path": "/", "sni": "abc.example.com"}
    seen = echo()
    seen.sni = "abc.example.com"
    assert rq.compare(req(), seen, resp(), defaulted, sent=sent) is None
    assert "SNI" in rq.compare(req(), echo(), resp(), defaulted, sent=sent)
    # an explicit expected request names the backend SNI itself; the request's sni was the client's
    explicit = dict(EXPECT, backendRequest={"path": "/", "method": "GET",
                                            "tlsServerName": "abc.example.com",
                                            "_source": "ExpectedRequest"})
    client_sni = {"method": "GET", "path": "/", "sni": "https-listener.org"}
    assert rq.compare(req(), seen, resp(), explicit, sent=client_sni) is None
    assert rq.compare(req(), echo(), resp(),
                      dict(EXPECT, backendRequest={"path": "/", "method": "GET",
                                                   "_source": "ExpectedRequest"}),
                      sent=client_sni) is None


def test_tests_the_data_cannot_replay_are_skipped_before_anything_runs(tmp_path: Path) -> None:
    suite = _suite(tmp_path, [{"name": "GatewayInfrastructure", "features": ["Gateway"],
                               "profiles": {"GATEWAY-HTTP": "extended"}}])
    p = plan(suite, Options(suite=tmp_path, supported=frozenset(  # type: ignore[arg-type]
        {"Gateway", "HTTPRoute", "ReferenceGrant"})))
    assert p.run == [] and p.skipped["GatewayInfrastructure"].startswith("harness: ")


class FakeFleet:
    """EchoFleet's interface without processes."""

    def __init__(self) -> None:
        from conformance.backends import Pod
        self.Pod = Pod
        self.running: list = []

    def start(self, deployment: dict, secrets: dict, configmaps: dict | None = None) -> list:
        meta = deployment["metadata"]
        pods = [self.Pod(f"{meta['name']}-abcdefghij-k{i}", meta["namespace"], meta["name"],
                         f"127.2.9.{i + 1}", deployment["spec"]["template"]["metadata"]["labels"])
                for i in range(deployment["spec"].get("replicas", 1))]
        self.running += pods
        return pods

    def stop(self, pods: list) -> None:
        self.running = [p for p in self.running if p not in pods]

    def stop_all(self) -> None:
        self.running = []

    def pods(self) -> list:
        return list(self.running)

    def pods_of(self, ns: str, dep: str) -> list:
        return [p for p in self.running if p.namespace == ns and p.deployment == dep]

    def dead(self) -> list:
        return []


MANIFEST = [
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
     "metadata": {"name": "gw", "namespace": "infra",
                  "annotations": {"gateway-api/skip-this-for-readiness": "true"}},
     "spec": {"gatewayClassName": "kgw",
              "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo", "namespace": "infra"},
     "spec": {"selector": {"app": "echo"},
              "ports": [{"name": "http", "port": 8080, "targetPort": 3000}]}},
    {"apiVersion": "apps/v1", "kind": "Deployment",
     "metadata": {"name": "echo", "namespace": "infra"},
     "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "echo"}},
                                          "spec": {"containers": [
         {"image": "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0"}]}}}},
    {"apiVersion": "apps/v1", "kind": "Deployment",
     "metadata": {"name": "dns", "namespace": "infra"},
     "spec": {"template": {"metadata": {"labels": {"app": "udp"}}, "spec": {"containers": [
         {"image": "registry.k8s.io/coredns/coredns:v1.14.6"}]}}}},
]


def test_world_writes_what_kgw_reads_and_endpoints_for_the_pods(tmp_path: Path) -> None:
    from conformance.world import World
    world = World(tmp_path, FakeFleet(), secrets=[])  # type: ignore[arg-type]
    world.apply("T", MANIFEST)
    written = list(yaml.safe_load_all((tmp_path / "config" / "tests" / "T.yaml").read_text()))
    assert [o["kind"] for o in written] == ["Gateway", "Service"]  # no Deployments
    assert written[0]["spec"]["addresses"] == [{"type": "IPAddress", "value": "127.1.0.1"}]
    slices = list(yaml.safe_load_all((tmp_path / "config" / "00-endpoints.yaml").read_text()))
    assert len(slices) == 1 and slices[0]["metadata"]["labels"] == {
        "kubernetes.io/service-name": "echo"}
    assert sorted(e["addresses"][0] for e in slices[0]["endpoints"]) == ["127.2.9.1", "127.2.9.2"]
    assert world.skip_readiness() == {("infra", "gw")}
    assert world.status_keys("T") == {("Gateway", "infra", "gw")}
    assert world.gateway_listeners(("infra", "gw"))[0]["port"] == 80
    world.remove("T")
    assert not (tmp_path / "config" / "tests" / "T.yaml").exists()
    assert not list(yaml.safe_load_all((tmp_path / "config" / "00-endpoints.yaml").read_text()))


# -- udp --------------------------------------------------------------------------------


def test_udp_echo_containers_run_the_udp_mode_on_8080() -> None:
    args, ports = echo_command({"UDP_ECHO_SERVER": "1"}, "127.2.1.1", "p-a-b", "ns")
    assert args[args.index("--udp-port") + 1] == "8080" and ports == (8080,)
    assert "--port" not in args and "--tcp-port" not in args
    args, ports = echo_command({"UDP_ECHO_SERVER": "1", "UDP_PORT": "5353"}, "127.2.1.1", "p-a-b",
                               "ns")
    assert args[args.index("--udp-port") + 1] == "5353" and ports == (5353,)
    with pytest.raises(RuntimeError, match="UDP_PORT"):
        echo_command({"UDP_ECHO_SERVER": "1", "UDP_PORT": "x"}, "127.2.1.1", "p-a-b", "ns")


def test_udp_payload_checks_service_and_namespace_as_upstream() -> None:
    """udp.ExpectEchoResponseFromBackend compares the envelope's service (the echo's
    SERVICE_NAME) and namespace, each when expected."""
    doc = {"pod": "udp-backend-v1-abc-def", "namespace": "infra", "service": "udp-backend-v1"}
    assert rq.validate_udp_payload(doc, "udp-backend-v1", "infra") is None
    assert "service" in rq.validate_udp_payload(doc, "udp-backend-v2", "infra")
    assert rq.validate_udp_payload(dict(doc, service="udp-backend-v10"), "udp-backend-v1",
                                   "infra") is not None
    assert "namespace" in rq.validate_udp_payload(doc, "udp-backend-v1", "other")
    assert rq.validate_udp_payload(doc, "", "") is None


def _udp_replayer():
    from conformance.replay import Replayer

    return Replayer(None, secret_pair=lambda n, s: (b"", b""), mirror_log_has=lambda *a: False,  # type: ignore[arg-type]
                    mirror_log_count=lambda *a: 0, limit=0.5)


def test_udp_groups_probe_each_case_until_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.replay import CaseFailed, Target

    calls: list[tuple] = []

    def probe(address: str, service: str = "", namespace: str = "",
              timeout: float = 0) -> str | None:
        calls.append((address, service, namespace))
        return None if service != "missing" else "no UDP answer"

    monkeypatch.setattr(rq, "udp_probe", probe)
    r = _udp_replayer()
    target = Target("127.1.0.5:5310", "udp")
    group = {"protocol": "udp", "cases": [{"Service": "svc-a", "Namespace": "infra"},
                                          {"Service": "svc-b", "Namespace": "infra"}]}
    r.run_udp_group(group, target, "response")
    assert calls == [("127.1.0.5:5310", "svc-a", "infra")] * 3 + [
        ("127.1.0.5:5310", "svc-b", "infra")] * 3
    calls.clear()
    r.run_udp_group({"protocol": "udp"}, target, "any-echo")
    assert calls == [("127.1.0.5:5310", "", "")] * 3
    with pytest.raises(CaseFailed, match="missing"):
        r.run_udp_group({"cases": [{"Service": "missing", "Namespace": "infra"}]}, target,
                        "response")
    with pytest.raises(HarnessGap):
        r.run_udp_group({"cases": [{"Namespace": "infra"}]}, target, "response")
    with pytest.raises(HarnessGap):
        r.run_udp_group({"cases": []}, target, "failure")


def test_udp_weighted_distribution_attributes_pods_to_backends(
    monkeypatch: pytest.MonkeyPatch) -> None:
    from conformance.replay import Target

    weights = {"udp-backend-v1": 0.7, "udp-backend-v2": 0.3, "udp-backend-v3": 0.0}
    pods = iter(["udp-backend-v1-h-a"] * 350 + ["udp-backend-v2-h-b"] * 150)
    monkeypatch.setattr(rq, "udp_echo_pod", lambda address, timeout=0: next(pods))
    r = _udp_replayer()
    r.udp_weighted_distribution(Target("127.1.0.9:5300", "udp"), weights, concurrency=1, retries=1)
    pods = iter(["udp-backend-v1-h-a"] * 349 + ["udp-backend-v3-h-c"]
                + ["udp-backend-v2-h-b"] * 150)
    with pytest.raises(CheckFailed, match="expected 2 backends to receive traffic, but got 3"):
        r.udp_weighted_distribution(Target("127.1.0.9:5300", "udp"), weights, concurrency=1,
                                    retries=1)


def test_udp_echo_pods_run_only_when_udproute_is_claimed() -> None:
    from types import SimpleNamespace

    from conformance.runner import Runner

    dep = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
        {"image": "echo-basic", "env": [{"name": "UDP_ECHO_SERVER", "value": "1"}]}]}}}}
    claimed = SimpleNamespace(opts=SimpleNamespace(supported=frozenset({"Gateway", "UDPRoute"})))
    unclaimed = SimpleNamespace(opts=SimpleNamespace(supported=frozenset({"Gateway", "TCPRoute"})))
    assert Runner._wants_deployment(claimed, dep) is True  # type: ignore[arg-type]
    assert Runner._wants_deployment(unclaimed, dep) is False  # type: ignore[arg-type]


# -- upstream's checks, restored: each one against a deliberately wrong behaviour -----------
#
# Real servers where the check is about the wire: ``kgw echo`` (HTTP, HTTPS with and
# without a client CA, TCP), the CoreDNS stand-in, and small socket servers that misbehave
# on purpose. Each test shows the check failing on the wrong behaviour and passing on the
# right one.

import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from conformance import certs  # noqa: E402
from conformance.replay import CaseFailed, Replayer, Target  # noqa: E402
from tests.helpers import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INFRA = "gateway-conformance-infra"


def _spawn(tmp: Path, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TLS_", "TCP_", "UDP_", "HTTP"))}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT,
                            env={**clean, "PYTHONPATH": str(ROOT), **env},
                            stdout=open(tmp / f"{name}.log", "wb"), stderr=subprocess.STDOUT)


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture(scope="module")
def echoes(tmp_path_factory: pytest.TempPathFactory):
    """``kgw echo`` three ways: HTTP; HTTPS asking for client certificates (the suite's
    TLS_CLIENT_CACERTS); HTTPS that does not ask (the wrong behaviour for a listener that
    must). Certificates are the suite's (conformance.certs)."""
    tmp = tmp_path_factory.mktemp("echoes")
    g = certs.generate()
    server, client = g.pair(INFRA, "tls-validity-checks-certificate"), g.pair(
        INFRA, "tls-validity-checks-client-certificate")
    ca = next(o for o in g.objects if o["kind"] == "ConfigMap"
              and o["metadata"]["name"] == "tls-validity-checks-ca-certificate")["data"]["ca.crt"]
    for name, data in (("crt", server.cert_pem), ("key", server.key_pem), ("ca", ca.encode())):
        (tmp / name).write_bytes(data)
    ports = {"http": free_port(), "asks": free_port(), "silent": free_port()}
    common = {"POD_NAME": "infra-backend-v1-abcdefghij-klmno", "NAMESPACE": INFRA,
              "TLS_SERVER_CERT": str(tmp / "crt"), "TLS_SERVER_PRIVKEY": str(tmp / "key")}
    procs = [
        _spawn(tmp, "asks",
               ["-m", "kgw_l7.echo", "--address", "127.0.0.1", "--port", str(ports["http"]),
                "--tls-port", str(ports["asks"])],
               {**common, "TLS_CLIENT_CACERTS": str(tmp / "ca")}),
        _spawn(tmp, "silent",
               ["-m", "kgw_l7.echo", "--address", "127.0.0.1", "--port", str(free_port()),
                "--tls-port", str(ports["silent"])], common),
    ]
    try:
        for p in ports.values():
            _wait_tcp(p, procs[0] if p != ports["silent"] else procs[1])
        yield ports, server, client
    finally:
        _stop_all(procs)


def _replayer(limit: float = 2.0) -> Replayer:
    return Replayer(None, secret_pair=lambda ns, n: (b"", b""), mirror_log_has=lambda *a: False,  # type: ignore[arg-type]
                    mirror_log_count=lambda *a: 0, limit=limit)


CASE_200 = {"request": {"path": "/", "host": "example.org"},
            "expect": {"statusCodes": [200], "backendPodPrefix": "infra-backend-v1",
                       "backendNamespace": INFRA}}


def test_a_listener_that_does_not_ask_for_the_client_certificate_fails(echoes) -> None:
    """Upstream's TLS helpers assert the server asked for the certificate they hold
    (GetClientCertificate hook); serving the request is not enough."""
    ports, server, client = echoes
    target = Target(f"127.0.0.1:{ports['silent']}", "https", server_name="example.org",
                    ca_pem=server.cert_pem, client_cert=(client.cert_pem, client.key_pem))
    with pytest.raises(CheckFailed, match="client certificate was not presented"):
        _replayer().run_case(target, CASE_200)
    _replayer().run_case(Target(f"127.0.0.1:{ports['asks']}", "https", server_name="example.org",
                                ca_pem=server.cert_pem,
                                client_cert=(client.cert_pem, client.key_pem)), CASE_200)
    # the same for a request that must fail
    # (MakeTLSRequestAndExpectEventuallyConsistentFailureResponse)
    bad = Target(f"127.0.0.1:{ports['silent']}", "https", server_name="example.org", ca_pem=b"",
                 client_cert=(client.cert_pem, client.key_pem))
    with pytest.raises(CheckFailed, match="client certificate was not presented"):
        _replayer().run_case(bad, CASE_200, "failure")


def test_a_backend_that_did_not_see_the_client_certificate_fails(echoes) -> None:
    """GatewayTLSBackendClientCertificate: the echo's tls.peerCertificates must hold the
    certificate the case names (here the client is the one presenting it)."""
    ports, server, client = echoes
    sent = {"path": "/", "host": "example.org", "clientCert": client.cert_pem.decode()}
    expect = dict(CASE_200["expect"], backendRequest={"path": "/", "method": "GET",
                                                       "_source": "defaults to Request (host not "
                                                                  "checked)"})
    for port, ok in ((ports["silent"], False), (ports["asks"], True)):
        request = rq.Request("GET", "https", f"127.0.0.1:{port}", "/", host="example.org",
                             server_name="example.org",
                             ca_pem=server.cert_pem, client_cert=(client.cert_pem, client.key_pem))
        creq, cres = rq.round_trip(request)
        why = rq.compare(request, creq, cres, expect, sent=sent)
        assert (why is None) is ok, why
        if not ok:
            assert "expected client certificate was not captured" in why


def test_the_backend_must_see_the_host_sent_when_no_request_is_expected() -> None:
    """http.go: ExpectedRequest defaults to the Request, Host included."""
    sent = {"path": "/", "host": "abc.example.com"}
    defaulted = dict(EXPECT, backendRequest={"path": "/", "method": "GET",
                                             "_source": "defaults to Request (...)"})
    assert rq.compare(req(), echo(host="abc.example.com"), resp(), defaulted, sent=sent) is None
    assert "expected host to be abc.example.com" in rq.compare(req(), echo(
        host="rewritten.example.com"), resp(),
                                                              defaulted, sent=sent)
    assert "expected host" in rq.compare(req(), echo(host="other"), resp(), {"statusCodes": [200],
                                         "backendPodPrefix": "infra-backend-v1",
                                         "backendNamespace": "gateway-conformance-infra"},
                                         sent=sent)
    # an explicit expected request without a host does not check it
    assert rq.compare(req(), echo(host="other"), resp(), EXPECT, sent=sent) is None


def test_a_200_where_the_request_must_fail_fails_at_once(echoes) -> None:
    """WaitForConsistentFailureResponse: t.Fatalf on the first 200, no retrying until 30 s."""
    ports, _, _ = echoes
    started = time.monotonic()
    with pytest.raises(rq.WrongAnswer, match=r"should fail, returned HTTP status OK \(200\)"):
        _replayer(limit=30.0).run_case(Target(f"127.0.0.1:{ports['http']}", "http"), CASE_200,
                                       "failure-not-200")
    assert time.monotonic() - started < 5.0


def test_a_wrong_tcp_answer_fails_at_once(tmp_path: Path) -> None:
    """WaitForValidTCPResponse: an exchange with a wrong answer fails the test (its
    assertions), it is not retried for 30 s."""
    port = free_port()
    proc = _spawn(tmp_path, "tcp",
                  ["-m", "kgw_l7.echo", "--address", "127.0.0.1", "--pod", "tcp-backend-abc-12345",
                   "--namespace", "other-namespace"],
                  {"TCP_ECHO_SERVER": "1", "TCP_PORT": str(port)})
    try:
        _wait_tcp(port, proc)
        r = _replayer(limit=30.0)
        target = Target(f"127.0.0.1:{port}", "tcp")
        started = time.monotonic()
        with pytest.raises(CaseFailed, match="namespace does not match"):
            r.run_tcp_group({"cases": [{"Backend": "tcp-backend", "Namespace": INFRA}]}, target,
                            "response")
        assert time.monotonic() - started < 5.0
        r.run_tcp_group({"cases": [{"Backend": "tcp-backend", "Namespace": "other-namespace"}]},
                        target, "response")
    finally:
        _stop_all([proc])


def test_udproute_needs_a_dns_answer_from_coredns_through_the_route(tmp_path: Path) -> None:
    """UDPRoute: the DNS query for foo.bar.com. must be answered as CoreDNS's whoami
    would; an echo that answers something else, silence, or a server without that zone
    (SERVFAIL from forward) fail."""
    port = free_port(kind=socket.SOCK_DGRAM)
    (tmp_path / "Corefile").write_text(f".:{port} {{\n    forward . 8.8.8.8 9.9.9.9\n    log\n}}\n"
                                       f"foo.bar.com:{port} {{\n  whoami\n}}\n")
    (tmp_path / "Forward").write_text(f".:{port} {{\n    forward . 8.8.8.8\n}}\n")
    dns_proc = _spawn(tmp_path, "dns", ["-m", "conformance.dns_backend", "--address", "127.0.0.1",
                                        "--conf", str(tmp_path / "Corefile")], {})
    try:
        deadline = time.monotonic() + 15
        while rq.dns_whoami_probe(f"127.0.0.1:{port}", timeout=0.3) is not None:
            assert time.monotonic() < deadline and dns_proc.poll() is None, (
                tmp_path / "dns.log").read_text()
        assert rq.dns_whoami_probe(f"127.0.0.1:{port}") is None
    finally:
        _stop_all([dns_proc])
    assert "failed to perform a UDP query" in rq.dns_whoami_probe(f"127.0.0.1:{port}", timeout=0.3)
    fwd = _spawn(tmp_path, "fwd", ["-m", "conformance.dns_backend", "--address", "127.0.0.1",
                                   "--conf", str(tmp_path / "Forward")], {})
    udp = _spawn(tmp_path, "udp", ["-m", "kgw_l7.echo", "--address", "127.0.0.1"],
                 {"UDP_ECHO_SERVER": "1",
                  "UDP_PORT": str(udp_port := free_port(kind=socket.SOCK_DGRAM))})
    try:
        deadline = time.monotonic() + 15
        while "failed to perform" in (rq.dns_whoami_probe(f"127.0.0.1:{port}", timeout=0.3)
                                      or "ok"):
            assert time.monotonic() < deadline, (tmp_path / "fwd.log").read_text()
        assert "SERVFAIL" in rq.dns_whoami_probe(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 15
        while rq.udp_probe(f"127.0.0.1:{udp_port}", timeout=0.3) is not None:
            assert time.monotonic() < deadline, (tmp_path / "udp.log").read_text()
        assert "failed to perform a UDP query" in rq.dns_whoami_probe(f"127.0.0.1:{udp_port}",
                                                                      timeout=1.0)
    finally:
        _stop_all([fwd, udp])


def test_an_object_that_is_not_applied_fails_at_once_and_an_unlisted_one_is_not_empty() -> None:
    """helpers.go: a failed Get ends the poll; and kgw not listing a route is not the
    same as the route having no parents (HTTPRouteMustHaveNoAcceptedParents)."""
    chk = StatusChecker(FakeAdmin([{}]), Timeouts(30.0), interval=0.001,  # type: ignore[arg-type]
                        exists=lambda kind, ns, name: False)
    started = time.monotonic()
    with pytest.raises(CheckFailed, match="not found"):
        chk.GatewayMustHaveCondition({"Name": "gw", "Namespace": "infra"},
                                     {"Type": "Programmed", "Status": "True"})
    with pytest.raises(CheckFailed, match="not found"):
        chk.HTTPRouteMustHaveNoAcceptedParents({"Name": "r", "Namespace": "infra"})
    assert time.monotonic() - started < 2.0
    applied = StatusChecker(FakeAdmin([{}]), Timeouts(1.2), interval=0.01,  # type: ignore[arg-type]
                            exists=lambda kind, ns, name: True)
    with pytest.raises(CheckFailed, match="has no status"):
        applied.HTTPRouteMustHaveNoAcceptedParents({"Name": "r", "Namespace": "infra"})
    listed = {
        ("HTTPRoute", "infra", "r"): {"metadata": {"generation": 1}, "status": {"parents": []}}}
    checker = StatusChecker(FakeAdmin([listed]), Timeouts(3.0), interval=0.01)  # type: ignore[arg-type]
    checker.HTTPRouteMustHaveNoAcceptedParents({"Name": "r", "Namespace": "infra"})


def test_namespaces_must_be_ready_checks_every_applied_gateway() -> None:
    """Upstream lists the namespace's Gateways from the API server: one kgw reports no
    status for is not ready (only the skip annotation leaves it out)."""
    ready = gw_status(1, [cond("Accepted", "True"), cond("Programmed", "True")])
    gws = [{"kind": "Gateway", "metadata": {"name": "gw", "namespace": "infra"}},
           {"kind": "Gateway", "metadata": {"name": "forgotten", "namespace": "infra"}}]
    chk = StatusChecker(FakeAdmin([ready]), Timeouts(0.05), interval=0.001,  # type: ignore[arg-type]
                        gateways_in=lambda nss: gws)
    with pytest.raises(CheckFailed, match="forgotten not Accepted yet"):
        chk.NamespacesMustBeReady(["infra"])
    StatusChecker(FakeAdmin([ready]), Timeouts(0.05), interval=0.001, gateways_in=lambda nss: gws,  # type: ignore[arg-type]
                  skip_readiness=lambda: {("infra", "forgotten")}).NamespacesMustBeReady(["infra"])


def test_namespaces_without_pods_are_not_ready(tmp_path: Path) -> None:
    from conformance.world import World
    world = World(tmp_path, FakeFleet(), secrets=[])  # type: ignore[arg-type]
    assert "No pods deployed yet in namespace infra" in world.pods_ready(["infra"])
    world.apply("T", MANIFEST)
    assert world.pods_ready(["infra"]) is None
    assert world.exists("Gateway", "infra", "gw") and not world.exists("Gateway", "infra", "nope")


def test_mid_test_edits_are_upstreams() -> None:
    from conformance.scenarios import (StepFailed, _add_alternate_listener, _add_http_listener,
                                       _keep_only_http_listener)

    gw = {"spec": {"listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}
    _add_alternate_listener(gw)
    assert gw["spec"]["listeners"][-1] == {"name": "alternate", "hostname": "foo.com", "port": 80,
                                           "protocol": "HTTP",
                                           "allowedRoutes": {"namespaces": {"from": "All"}}}
    gw = {"spec": {"listeners": [{"name": "https", "port": 443, "protocol": "HTTPS"}]}}
    _add_http_listener(gw)
    assert gw["spec"]["listeners"][-1]["hostname"] == "data.test.com"
    _keep_only_http_listener(gw)
    assert [lst["name"] for lst in gw["spec"]["listeners"]] == ["http"]
    with pytest.raises(StepFailed, match="must have 2 listeners"):
        _keep_only_http_listener(gw)


def test_backend_weights_need_exactly_one_backend_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPRouteRequestHeaderModifierBackendWeights: two Backend values (both filters
    applied) fail even when the first matches the pod."""
    captured = [echo(headers={"Backend": ["infra-backend-v1", "infra-backend-v2"]})]
    monkeypatch.setattr(rq, "round_trip", lambda request: (captured[0], resp()))
    r = _replayer()
    with pytest.raises(CheckFailed, match="expected a single 'Backend' header"):
        r.header_per_backend(Target("127.0.0.1:1", "http"), CASE_200, total=3)
    captured[0] = echo(headers={"Backend": ["infra-backend-v1"]})
    r.header_per_backend(Target("127.0.0.1:1", "http"), CASE_200, total=3)
    captured[0] = echo(headers={"Backend": ["infra-backend-v2"]})
    with pytest.raises(CheckFailed, match="does not match pod"):
        r.header_per_backend(Target("127.0.0.1:1", "http"), CASE_200, total=3)


def test_a_redirect_without_location_is_an_error() -> None:
    """roundtripper: resp.Location() fails for every redirect status without one."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]

        def serve() -> None:
            for _ in range(2):
                conn, _ = srv.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        t = threading.Thread(target=serve)
        t.start()
        for unfollow in (True, False):
            with pytest.raises(rq.RequestError, match="without a Location"):
                rq.round_trip(req(address=f"127.0.0.1:{port}", unfollow_redirect=unfollow))
        t.join()


# -- gRPC (the GRPC profile; HTTPRouteBackendProtocolH2C) -------------------------------
#
# Replayed before kgw speaks HTTP/2: against ``kgw echo``'s gRPC mode, directly and
# through a small grpcio proxy that routes as the test's GRPCRoute says (the right
# behaviour) or deliberately wrong.

import concurrent.futures  # noqa: E402
import itertools  # noqa: E402
from collections.abc import Callable  # noqa: E402

from conformance.__main__ import claimed  # noqa: E402

GRPC_ECHO = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/"


def grpc_case(method: str, code: int = 0, backend: str = "", namespace: str = INFRA,
              **request: object) -> dict:
    """A case as the records hold them (cases/GRPC*.json)."""
    expect: dict = {"grpcCode": code}
    if code == 0:
        expect.update(backendNamespace=namespace,
                      **({"backendPodPrefix": backend} if backend else {}))
    return {"request": {"rpc": GRPC_ECHO + method, **request}, "expect": expect}


def test_grpc_cases_read_as_upstream_expected_responses() -> None:
    import grpc

    from conformance import grpc_requests as gq

    c = gq.GrpcCase.from_record(grpc_case("EchoTwo", backend="grpc-infra-backend-v2",
                                          authority="foo.bar.com",
                                          metadata={"Version": "two", "Color": "orange"}))
    assert (c.method, c.authority, c.code, c.backend, c.namespace) == (
        "EchoTwo", "foo.bar.com", grpc.StatusCode.OK, "grpc-infra-backend-v2", INFRA)
    assert c.metadata == (("Version", "two"), ("Color", "orange"))
    # upstream GetTestCaseName
    assert c.test_case_name(3) == (f"3 request to 'foo.bar.com{GRPC_ECHO}EchoTwo' with headers "
                                   "'{Color:orange,Version:two}' should go to "
                                   "grpc-infra-backend-v2")
    three = gq.GrpcCase.from_record(grpc_case("EchoThree", code=12))
    assert three.code is grpc.StatusCode.UNIMPLEMENTED
    assert three.test_case_name(
        2) == f"2 request to '{GRPC_ECHO}EchoThree' should receive a Unimplemented (12)"
    assert gq.GrpcCase.from_record(dict(grpc_case("Echo"), name="Named")).test_case_name(
        0) == "Named"
    for bad in ({"request": {"rpc": "/other.Service/Echo"}, "expect": {}},
                {"request": {"rpc": GRPC_ECHO + "EchoFour"}, "expect": {}},
                {"request": {"rpc": GRPC_ECHO + "Echo"}, "expect": {"grpcCode": 99}}):
        with pytest.raises(gq.CaseError):
            gq.GrpcCase.from_record(bad)
    with pytest.raises(HarnessGap, match="not a method"):
        _replayer().run_grpc_group({"cases": [{"request": {"rpc": "/x.Y/Z"}, "expect": {}}]},
                                   Target("127.0.0.1:1", "grpc"), "response")


def test_grpc_comparison_is_upstreams_compare_response() -> None:
    import grpc

    from conformance import grpc_requests as gq

    pb, _ = gq.echo_modules()

    def answer(method: str = "Echo", pod: str = "grpc-infra-backend-v1-abc-def",
               ns: str = INFRA) -> gq.GrpcResponse:
        a = pb.Assertions(fully_qualified_method=GRPC_ECHO + method,
                          context=pb.Context(namespace=ns, pod=pod))
        return gq.GrpcResponse(grpc.StatusCode.OK, response=pb.EchoResponse(assertions=a))

    case = gq.GrpcCase.from_record(grpc_case("Echo", backend="grpc-infra-backend-v1"))
    assert gq.compare(case, answer()) is None
    assert "expected status code to be OK (0), but got Unimplemented (12)" in gq.compare(
        case, gq.GrpcResponse(grpc.StatusCode.UNIMPLEMENTED, "no route"))
    assert "expected path to be" in gq.compare(case, answer(method="EchoTwo"))
    assert "expected namespace" in gq.compare(case, answer(ns="other"))
    assert "expected pod name to start with grpc-infra-backend-v1" in gq.compare(
        case, answer(pod="grpc-infra-backend-v2-abc-def"))
    # no namespace in the case: not compared; a non-OK code ends the comparison
    assert gq.compare(gq.GrpcCase(method="Echo"), answer(ns="other")) is None
    assert gq.compare(gq.GrpcCase.from_record(grpc_case("EchoThree", code=12)),
                      gq.GrpcResponse(grpc.StatusCode.UNIMPLEMENTED)) is None


def test_grpc_and_h2c_echo_containers_run_as_echo_basic() -> None:
    args, ports = echo_command({"GRPC_ECHO_SERVER": "1"}, "127.2.1.1", "grpc-a-b", "ns")
    # no certificate: clear text only
    assert args[args.index("--grpc-port") + 1] == "3000" and ports == (3000,)
    env = {"GRPC_ECHO_SERVER": "1", "TLS_SERVER_CERT": "/p/crt", "TLS_SERVER_PRIV_KEY": "/p/key"}
    args, ports = echo_command(env, "127.2.1.1", "grpc-a-b", "ns")
    assert args[args.index("--tls-port") + 1] == "8443" and ports == (3000, 8443)
    args, ports = echo_command({"H2C_PORT": "4001"}, "127.2.1.1", "p-a-b", "ns")
    assert args[args.index("--h2c-port") + 1] == "4001" and ports == (3000, 4001)


def test_grpc_profile_is_skipped_until_claimed_and_claim_adds_features(tmp_path: Path) -> None:
    suite = _suite(tmp_path, [
        {"name": "GRPCExactMethodMatching", "features": ["Gateway", "GRPCRoute"],
         "profiles": {"GATEWAY-GRPC": "core"}},
        {"name": "GatewayInfrastructurePropagation",
         "features": ["Gateway", "HTTPRoute", "GatewayInfrastructurePropagation"],
         "profiles": {"GATEWAY-HTTP": "extended"}},
    ])
    p = plan(suite, Options(suite=tmp_path, supported=WITHOUT_GRPC))  # type: ignore[arg-type]
    assert not p.run and "GATEWAY-GRPC not supported" in p.skipped["GRPCExactMethodMatching"]
    assert "GatewayInfrastructurePropagation" in p.skipped["GatewayInfrastructurePropagation"]
    more = claimed(claim="GRPCRoute,GatewayInfrastructurePropagation")
    assert more == SUPPORTED_FEATURES | {"GRPCRoute", "GatewayInfrastructurePropagation"}
    p = plan(suite, Options(suite=tmp_path, supported=more))  # type: ignore[arg-type]
    assert [t.name for t in p.run] == ["GRPCExactMethodMatching",
                                       "GatewayInfrastructurePropagation"]
    assert claimed("Gateway,HTTPRoute", "GRPCRoute", "HTTPRoute") == {"Gateway", "GRPCRoute"}


def test_grpc_echo_pods_run_only_when_grpcroute_is_claimed() -> None:
    from types import SimpleNamespace

    from conformance.runner import Runner

    dep = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
        {"image": "echo-basic", "env": [{"name": "GRPC_ECHO_SERVER", "value": "1"}]}]}}}}
    assert Runner._wants_deployment(SimpleNamespace(opts=SimpleNamespace(  # type: ignore[arg-type]
        supported=SUPPORTED_FEATURES)), dep) is True
    assert Runner._wants_deployment(SimpleNamespace(opts=SimpleNamespace(  # type: ignore[arg-type]
        supported=WITHOUT_GRPC)), dep) is False


@pytest.fixture(scope="module")
def grpc_pods(tmp_path_factory: pytest.TempPathFactory):
    """Three gRPC echo pods as the suite's grpc-infra-backend-v1..3 (GRPC_ECHO_SERVER, their
    HTTP_PORT), each on its own free port: {backend: address}."""
    tmp = tmp_path_factory.mktemp("grpcpods")
    pods, procs = {}, []
    for v in ("v1", "v2", "v3"):
        port = free_port()
        procs.append(_spawn(tmp, v, ["-m", "kgw_l7.echo", "--address", "127.0.0.1"], {
            "GRPC_ECHO_SERVER": "1", "HTTP_PORT": str(port), "NAMESPACE": INFRA,
            "POD_NAME": f"grpc-infra-backend-{v}-{v}bcdfghjk-{v}mnp"}))
        pods[f"grpc-infra-backend-{v}"] = f"127.0.0.1:{port}"
    try:
        for p, addr in zip(procs, pods.values()):
            _wait_tcp(int(addr.rpartition(":")[2]), p)
        yield pods
    finally:
        _stop_all(procs)


class GrpcProxy:
    """A tiny gRPC gateway stand-in (grpcio, bytes passed through): ``route(method,
    authority, metadata)`` names the backend address, or None for UNIMPLEMENTED (no
    route, as Envoy and kgw answer); ``rewrite`` may change the method forwarded."""

    def __init__(self, route: Callable[[str, str, dict], str | None],
                 rewrite: Callable[[str], str] = lambda m: m) -> None:
        import grpc

        from kgw_l7.echo.grpcecho import authority_of

        self.channels: dict[str, grpc.Channel] = {}
        proxy = self

        def forward(method: str) -> Callable:
            def call(request: bytes, context: grpc.ServicerContext) -> bytes:
                md = {k: v for k, v in context.invocation_metadata() if k != "user-agent"}
                backend = route(method, authority_of(context), md)
                if backend is None:
                    context.abort(grpc.StatusCode.UNIMPLEMENTED, "no route")
                ch = proxy.channels.setdefault(backend, grpc.insecure_channel(backend))
                try:
                    return ch.unary_unary(rewrite(method))(request, metadata=tuple(md.items()),
                                                           timeout=5)
                except grpc.RpcError as exc:
                    context.abort(exc.code(), exc.details())
            return call

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails):
                return grpc.unary_unary_rpc_method_handler(forward(details.method))

        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((Handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.address = f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.stop(None)
        for ch in self.channels.values():
            ch.close()


def _grpc_group(cases: list[dict], expect: str = "response") -> dict:
    return {"helper": "grpc.MakeRequestAndExpectEventuallyConsistentResponse", "protocol": "grpc",
            "expect": expect, "cases": cases}


EXACT_METHOD_CASES = [grpc_case("Echo", backend="grpc-infra-backend-v1"),
                      grpc_case("EchoTwo", backend="grpc-infra-backend-v2"),
                      grpc_case("EchoThree", code=12)]


def test_grpc_replay_passes_the_right_routing_and_fails_wrong_ones(grpc_pods) -> None:
    """GRPCExactMethodMatching's cases through a proxy routing by method as its GRPCRoute
    says; then one that sends everything to v1 and one that forwards EchoTwo as Echo."""
    by_method = {GRPC_ECHO + "Echo": grpc_pods["grpc-infra-backend-v1"],
                 GRPC_ECHO + "EchoTwo": grpc_pods["grpc-infra-backend-v2"]}
    right = GrpcProxy(lambda m, a, md: by_method.get(m))
    one_backend = GrpcProxy(lambda m, a, md: grpc_pods["grpc-infra-backend-v1"])
    renamed = GrpcProxy(lambda m, a, md: by_method.get(m),
                        rewrite=lambda m: m.replace("EchoTwo", "Echo"))
    try:
        r = _replayer(limit=1.0)  # the wrong behaviours are retried until then, as upstream does
        r.run_grpc_group(_grpc_group(EXACT_METHOD_CASES), Target(right.address, "grpc"), "response")
        with pytest.raises(CaseFailed,
                           match="1 request to .*EchoTwo' should go to grpc-infra-backend-v2: .*"
                                 "expected pod name to start with grpc-infra-backend-v2"):
            r.run_grpc_group(_grpc_group(EXACT_METHOD_CASES), Target(one_backend.address, "grpc"),
                             "response")
        with pytest.raises(CaseFailed,
                           match=f"expected path to be {GRPC_ECHO}EchoTwo, got {GRPC_ECHO}Echo"):
            r.run_grpc_group(_grpc_group(EXACT_METHOD_CASES), Target(renamed.address, "grpc"),
                             "response")
        # no route must be UNIMPLEMENTED: a proxy answering UNAVAILABLE fails EchoThree's case
        unavailable = GrpcProxy(lambda m, a, md: by_method.get(m) or "127.0.0.1:1")
        try:
            with pytest.raises(CaseFailed,
                               match=r"expected status code to be Unimplemented \(12\), but got "
                                                 r"Unavailable \(14\)"):
                r.run_grpc_group(_grpc_group(EXACT_METHOD_CASES[2:]),
                                 Target(unavailable.address, "grpc"), "response")
        finally:
            unavailable.close()
    finally:
        for p in (right, one_backend, renamed):
            p.close()


def test_grpc_replay_sends_the_cases_authority_and_metadata(grpc_pods) -> None:
    """GRPCRouteListenerHostnameMatching routes by :authority, GRPCRouteHeaderMatching by
    metadata: a proxy that ignores them fails those cases."""
    v1, v2 = grpc_pods["grpc-infra-backend-v1"], grpc_pods["grpc-infra-backend-v2"]
    cases = [grpc_case("Echo", backend="grpc-infra-backend-v1", authority="bar.com"),
             grpc_case("Echo", backend="grpc-infra-backend-v2", authority="foo.bar.com"),
             grpc_case("Echo", backend="grpc-infra-backend-v2", metadata={"Version": "two"}),
             grpc_case("Echo", code=12, authority="no.matching.host")]

    def right_route(m: str, authority: str, md: dict) -> str | None:
        if authority == "no.matching.host":
            return None
        return v2 if authority == "foo.bar.com" or md.get("version") == "two" else v1

    right = GrpcProxy(right_route)
    blind = GrpcProxy(lambda m, a, md: None if a == "no.matching.host" else v1)
    try:
        _replayer(limit=1.0).run_grpc_group(_grpc_group(cases), Target(right.address, "grpc"),
                                            "response")
        with pytest.raises(CaseFailed, match="'foo.bar.com.*should go to grpc-infra-backend-v2"):
            _replayer(limit=1.0).run_grpc_group(_grpc_group(cases), Target(blind.address, "grpc"),
                                                "response")
    finally:
        right.close()
        blind.close()


def test_grpc_failure_expectation_fails_at_once_on_ok(grpc_pods) -> None:
    """MakeRequestAndExpectEventuallyConsistentFailure (BackendTLSPolicyGRPCRoute): any
    code but OK passes, an OK fails the case at once (t.Fatalf), not after 30 s."""
    # the backend cannot be reached: UNAVAILABLE
    failing = GrpcProxy(lambda m, a, md: "127.0.0.1:1")
    try:
        cases = [grpc_case("EchoTwo", authority="abc.example.com")]
        r = _replayer(limit=30.0)
        r.run_grpc_group(_grpc_group(cases, "failure"), Target(failing.address, "grpc"), "failure")
        started = time.monotonic()
        with pytest.raises(CaseFailed, match="should have failed, but got status OK"):
            r.run_grpc_group(_grpc_group(cases, "failure"),
                             Target(grpc_pods["grpc-infra-backend-v1"], "grpc"), "failure")
        assert time.monotonic() - started < 5.0
    finally:
        failing.close()


def test_grpc_weighted_distribution_right_and_wrong(grpc_pods) -> None:
    """GRPCRouteWeight: 70/30/0 over v1/v2/v3, each call on a new connection; a 50/50
    split fails, a call reaching v3 (weight 0) fails."""
    v1, v2, v3 = (grpc_pods[f"grpc-infra-backend-{v}"] for v in ("v1", "v2", "v3"))
    weights = {"grpc-infra-backend-v1": 0.7, "grpc-infra-backend-v2": 0.3,
               "grpc-infra-backend-v3": 0.0}
    case = grpc_case("Echo")

    def cycle(pattern: list[str]) -> Callable[[str, str, dict], str]:
        it, lock = itertools.cycle(pattern), threading.Lock()

        def route(m: str, a: str, md: dict) -> str:
            with lock:
                return next(it)
        return route

    proxies = {"right": GrpcProxy(cycle([v1] * 7 + [v2] * 3)), "even": GrpcProxy(cycle([v1, v2])),
               "zero": GrpcProxy(cycle([v1] * 69 + [v3] + [v2] * 30))}
    try:
        r = _replayer()
        r.grpc_weighted_distribution(Target(proxies["right"].address, "grpc"), case, weights,
                                     total=200, retries=1)
        with pytest.raises(CheckFailed, match="weighted traffic of 0.5 not within tolerance 0.7"):
            r.grpc_weighted_distribution(Target(proxies["even"].address, "grpc"), case, weights,
                                         total=200, retries=1)
        with pytest.raises(CheckFailed, match="expected 2 backends to receive traffic, but got 3"):
            r.grpc_weighted_distribution(Target(proxies["zero"].address, "grpc"), case, weights,
                                         total=200, retries=1)
    finally:
        for p in proxies.values():
            p.close()
