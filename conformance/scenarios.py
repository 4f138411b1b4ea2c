"""How each test runs: by default its status checks, then its request groups, in order.

Some upstream tests change objects mid-test or run their own request loops; the cases
data names those steps in its notes and contexts, and they are replayed here, one
function per test. What the data does not describe well enough to replay is skipped
with the reason (``HarnessGap``), never guessed.
"""

from __future__ import annotations

import copy
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from conformance import requests as rq
from conformance.loader import TestCase, key_of
from conformance.replay import CaseFailed, Replayer, fill_route_placeholders
from conformance.status_checks import (T_GATEWAY_ADDRESS, CheckFailed, HarnessGap, StatusChecker,
                                        stale_conditions)
from conformance.world import World

Obj = dict[str, Any]
GENERATION_PICKUP_S = 10.0  # how long the file source may take to serve an edited file


class StepFailed(CheckFailed):
    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class TestRun:
    __test__ = False  # not a pytest test class

    test: TestCase
    world: World
    checker: StatusChecker
    replayer: Replayer
    file: str
    log: Callable[[str], None] = field(default=lambda m: None)

    # -- status checks --

    def checks(self, context: str | None = None) -> list[Obj]:
        return [c for c in self.test.status_checks if context is None
                or context in (c.get("context") or [])]

    def run_checks(self, checks: list[Obj]) -> None:
        names = [key_of(o)[2] for o in self.world.files[self.file].objects]
        for c in checks:
            self.log(f"  check {c['helper']}")
            c = dict(c, args=resolve_name_expressions(c.get("args") or [], names))
            try:
                self.checker.run(c)
            except CheckFailed as exc:
                raise StepFailed(c["helper"], str(exc)) from exc

    # -- requests --

    def default_gateway(self) -> Obj | None:
        """The Gateway whose address the test's ``gwAddr`` holds (its first check that
        returns an address), for targets recorded as expressions over gwAddr."""
        for c in self.test.status_checks:
            for a in c.get("args") or []:
                if isinstance(a, dict) and isinstance(a.get("gateway"), dict):
                    return a["gateway"]
        return None

    def run_groups(self, groups: list[Obj]) -> None:
        objects = self.world.files[self.file].objects
        for g in groups:
            g = fill_route_placeholders(g, objects)
            self.log(f"  requests {g.get('helper')} ({len(g.get('cases') or [])} cases)")
            try:
                self.replayer.run_group(g, default_gateway=self.default_gateway())
            except CaseFailed as exc:
                raise StepFailed(exc.case, str(exc)) from exc
            except CheckFailed as exc:
                raise StepFailed(g.get("helper", "requests"), str(exc)) from exc

    # -- objects --

    def object(self, kind: str, namespace: str, name: str) -> Obj:
        for o in self.world.files[self.file].objects:
            if key_of(o) == (kind, namespace, name):
                return o
        raise HarnessGap(f"{kind} {namespace}/{name} is not in the test's manifests")

    def generation(self, kind: str, namespace: str, name: str) -> int:
        item = self.checker.admin.statuses().get((kind, namespace, name))
        return int(((item or {}).get("metadata") or {}).get("generation") or 0)

    def update(self, kind: str, namespace: str, name: str, change: Callable[[Obj], None]) -> None:
        """Change an object in place and write it back, as upstream's Patch; wait until
        kgw serves the new generation (the API server would return it at once)."""
        before = self.generation(kind, namespace, name)
        change(self.object(kind, namespace, name))
        self.world.rewrite(self.file)
        deadline = time.monotonic() + GENERATION_PICKUP_S
        while self.generation(kind, namespace, name) == before:
            if time.monotonic() > deadline:
                raise StepFailed("update", f"{kind} {namespace}/{name}: generation still {before} "
                                           f"{GENERATION_PICKUP_S:.0f}s after the manifest changed")
            time.sleep(0.05)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        objs = self.world.files[self.file].objects
        objs[:] = [o for o in objs if key_of(o) != (kind, namespace, name)]
        self.world.rewrite(self.file)


_REPEAT = re.compile(r'strings\.Repeat\("(.)",\s*(\d+)\s*-\s*len\(\w+\)\)')


def resolve_name_expressions(value: Any, names: list[str]) -> Any:
    """Names the suite records as Go expressions (``<prefix + strings.Repeat("a", 253 -
    len(prefix))>``) are resolved against the test's own manifests: the one object name
    of that total length ending in the repeated character."""
    if isinstance(value, list):
        return [resolve_name_expressions(v, names) for v in value]
    if isinstance(value, dict):
        return {k: resolve_name_expressions(v, names) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        m = _REPEAT.search(value)
        if m:
            char, total = m.group(1), int(m.group(2))
            found = sorted({n for n in names if len(n) == total and n.endswith(char)})
            if len(found) == 1:
                return found[0]
        if not value.startswith("<suite.") and "GroupName" not in value:
            raise HarnessGap(f"cannot resolve the name expression {value}")
    return value


def default(run: TestRun) -> None:
    run.run_checks(run.checks())
    run.run_groups(run.test.request_groups)


# -- tests that change objects mid-test -------------------------------------------------

INFRA = "gateway-conformance-infra"


def _observed_generation_bump(kind: str, namespace: str, name: str, change: Callable[[Obj], None],
                              context: str = "observedGeneration should increment") -> Callable[
                                  [TestRun], None]:
    """Upstream *ObservedGenerationBump: checks, a spec change, the same checks again,
    and the generation must have moved."""
    def scenario(run: TestRun) -> None:
        checks = run.checks(context)
        run.run_checks(checks)
        before = run.generation(kind, namespace, name)
        run.update(kind, namespace, name, change)
        run.run_checks(checks)
        if run.generation(kind, namespace, name) == before:
            raise StepFailed("generation", "generation should change after an update")
    return scenario


def _add_alternate_listener(gw: Obj) -> None:
    """Upstream GatewayObservedGenerationBump's patch: an HTTP listener on port 80 for
    foo.com, routes from all namespaces."""
    gw["spec"]["listeners"].append({"name": "alternate", "hostname": "foo.com", "port": 80,
                                    "protocol": "HTTP",
                                    "allowedRoutes": {"namespaces": {"from": "All"}}})


def _route_to_v2(route: Obj) -> None:
    route["spec"]["rules"][0]["backendRefs"][0]["name"] = "infra-backend-v2"


def _new_description(gwc: Obj) -> None:
    gwc["spec"]["description"] = "new"


def _add_http_listener(gw: Obj) -> None:
    """GatewayModifyListeners' first patch: an HTTP listener ``http`` on port 80 for
    data.test.com, routes from all namespaces."""
    gw["spec"]["listeners"].append({"name": "http", "port": 80, "protocol": "HTTP",
                                    "hostname": "data.test.com",
                                    "allowedRoutes": {"namespaces": {"from": "All"}}})


def _keep_only_http_listener(gw: Obj) -> None:
    """GatewayModifyListeners' second patch: the Gateway must have exactly 2 listeners;
    only those named ``http`` are kept."""
    listeners = gw["spec"]["listeners"]
    if len(listeners) != 2:
        raise StepFailed("update", f"the gateway must have 2 listeners, it has {len(listeners)}")
    gw["spec"]["listeners"] = [lst for lst in listeners if lst.get("name") == "http"]


def gateway_modify_listeners(run: TestRun) -> None:
    """Upstream GatewayModifyListeners: add an HTTP listener to gateway-add-listener, then
    keep only the ``http`` listener of gateway-remove-listener; status must follow each
    change."""
    add_ctx = "should be able to add a listener that then becomes available for routing traffic"
    remove_ctx = (
        "should be able to remove listeners, which would then stop routing the relevant traffic")
    for ctx, gw, change in (
        (add_ctx, "gateway-add-listener", _add_http_listener),
        (remove_ctx, "gateway-remove-listener", _keep_only_http_listener),
    ):
        checks = run.checks(ctx)
        sanity = [c for c in checks
                  if c["helper"] in ("NamespacesMustBeReady", "GatewayMustHaveLatestConditions")]
        run.run_checks(sanity)
        before = run.generation("Gateway", INFRA, gw)
        run.update("Gateway", INFRA, gw, change)
        run.run_checks(checks)
        if run.generation("Gateway", INFRA, gw) == before:
            raise StepFailed("generation",
                             f"Gateway {gw}: generation should change after an update")


def httproute_reference_grant(run: TestRun) -> None:
    """Upstream HTTPRouteReferenceGrant: traffic reaches web-backend while the grant
    exists, and gets a 500 once the grant is deleted."""
    groups = run.test.request_groups
    if len(groups) != 2:
        raise HarnessGap(
            "expected two request groups (before and after deleting the ReferenceGrant)")
    run.run_checks(run.checks())
    run.run_groups(groups[:1])
    run.delete("ReferenceGrant", "gateway-conformance-web-backend", "reference-grant")
    run.run_groups(groups[1:])


def tcproute_multiple_routes_attachment(run: TestRun) -> None:
    """Upstream TCPRouteMultipleRoutesAttachment: once the Gateway and the older route
    are accepted, a second TCPRoute (built by the test's Go code, to tcp-attach-backend-2)
    is created at least a second later (creationTimestamp precision); both must be
    Accepted, the listener counts 2 routes, and traffic, sampled 100 times after it
    converges, reaches only the older route's backend."""
    first = [c for c in run.test.status_checks if not c.get("context")]
    later = [c for c in run.test.status_checks if c.get("context")]
    groups = run.test.request_groups
    if not first or not later or len(groups) != 1:
        raise HarnessGap("unexpected record shape for TCPRouteMultipleRoutesAttachment")
    run.run_checks(first)
    time.sleep(1.0)
    run.world.files[run.file].objects.append({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
        "metadata": {"name": "tcproute-attach-newer", "namespace": INFRA},
        "spec": {"parentRefs": [{"name": "tcp-multi-route-attach-gateway", "sectionName": "tcp"}],
                 "rules": [{"backendRefs": [{"name": "tcp-attach-backend-2", "port": 3000}]}]}})
    run.world.rewrite(run.file)
    run.run_checks(later)
    run.run_groups(groups)
    target = run.replayer.target(groups[0], run.default_gateway())
    for i in range(100):
        try:
            pod = rq.tcp_echo_pod(target.address)
        except rq.RequestError as exc:
            raise StepFailed("only the oldest route",
                             f"TCP echo request {i + 1}/100 failed: {exc}") from exc
        if not pod.startswith("tcp-attach-backend-1-"):
            raise StepFailed("only the oldest route",
                             f"request {i + 1}/100 reached {pod!r}; only the oldest "
                             "route (tcp-attach-backend-1) should be attached")


def tcproute_reference_grant(run: TestRun) -> None:
    """Upstream TCPRouteReferenceGrant: traffic reaches the web-backend pod while the
    grant exists; once the grant is deleted the route's ResolvedRefs turns
    False/RefNotPermitted (the checks recorded under "after the ReferenceGrant is deleted")."""
    after = [c for c in run.test.status_checks
             if any("after the ReferenceGrant is deleted" in x for x in c.get("context") or [])]
    if not after:
        raise HarnessGap("no status check recorded for after the ReferenceGrant is deleted")
    run.run_checks([c for c in run.test.status_checks if c not in after])
    run.run_groups(run.test.request_groups)
    run.delete("ReferenceGrant", "gateway-conformance-web-backend", "tcp-reference-grant")
    run.run_checks(after)


def udproute_weighted(run: TestRun) -> None:
    """Upstream UDPRouteWeightedRouting: after the checks, one echo through the route,
    then the distribution of new UDP flows over the route's weighted backends."""
    run.run_checks(run.checks())
    groups = run.test.request_groups
    dists = run.test.record.get("weightedDistribution") or []
    if len(groups) != 1 or groups[0].get("protocol") != "udp" or not dists:
        raise HarnessGap("UDP weighted distribution without its target or weights")
    run.run_groups(groups)
    target = run.replayer.target(groups[0], run.default_gateway())
    for d in dists:
        try:
            run.replayer.udp_weighted_distribution(target, d["expectedWeights"])
        except CheckFailed as exc:
            raise StepFailed("udp weighted distribution", str(exc)) from exc


def udproute_reference_grant(run: TestRun) -> None:
    """Upstream UDPRouteReferenceGrant: traffic reaches the cross-namespace backend while
    the grant exists; once the grant is deleted the route's ResolvedRefs turns
    False/RefNotPermitted (the check recorded as "after deleting the ReferenceGrant")."""
    after = [c for c in run.test.status_checks
             if any("after deleting the ReferenceGrant" in x for x in c.get("context") or [])]
    if not after:
        raise HarnessGap("no status check recorded for after the ReferenceGrant is deleted")
    run.run_checks([c for c in run.test.status_checks if c not in after])
    run.run_groups(run.test.request_groups)
    run.delete("ReferenceGrant", "gateway-conformance-app-backend", "udp-reference-grant")
    run.run_checks(after)


def udproute_multiple_routes_attachment(run: TestRun) -> None:
    """Upstream UDPRouteMultipleRoutesAttachment: once the Gateway and the older route
    are accepted, a second UDPRoute (built by the test's Go code, to udp-attach-backend-2)
    is created at least a second later (creationTimestamp precision); both must be
    Accepted and the listener counts 2 routes (the recorded checks). The record holds no
    requests; as the test's description says only the oldest route receives traffic,
    20 new flows are sampled and each must reach udp-attach-backend-1."""
    first = [c for c in run.test.status_checks if not c.get("context")]
    later = [c for c in run.test.status_checks if c.get("context")]
    if not first or not later or run.test.request_groups:
        raise HarnessGap("unexpected record shape for UDPRouteMultipleRoutesAttachment")
    run.run_checks(first)
    time.sleep(1.0)
    run.world.files[run.file].objects.append({
        "apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "UDPRoute",
        "metadata": {"name": "udproute-attach-newer", "namespace": INFRA},
        "spec": {"parentRefs": [{"name": "udp-multi-route-attach-gateway", "sectionName": "udp"}],
                 "rules": [{"backendRefs": [{"name": "udp-attach-backend-2", "port": 8080}]}]}})
    run.world.rewrite(run.file)
    run.run_checks(later)
    address = run.checker.gateway_address((INFRA, "udp-multi-route-attach-gateway"), "udp")
    try:
        rq.wait_consistent(lambda: rq.udp_probe(address, "udp-attach-backend-1", INFRA),
                           limit=run.replayer.limit)
    except rq.NotConsistent as exc:
        raise StepFailed("only the oldest route", str(exc)) from exc
    for i in range(20):
        try:
            pod = rq.udp_echo_pod(address)
        except rq.RequestError as exc:
            raise StepFailed("only the oldest route", f"UDP echo {i + 1}/20 failed: {exc}") from exc
        if not pod.startswith("udp-attach-backend-1-"):
            raise StepFailed("only the oldest route",
                             f"UDP echo {i + 1}/20 reached {pod!r}; only the oldest "
                             "route (udp-attach-backend-1) should be attached")


def udproute_dns(run: TestRun) -> None:
    """Upstream UDPRoute: once the Gateway and udp-coredns are accepted, an A query for
    foo.bar.com. sent to the Gateway must get a DNS reply from the coredns backend (the
    suite's Corefile serves that zone with whoami). Upstream polls every second for one
    reply within its test timeout; here 3 in a row (``rq.wait_consistent``)."""
    run.run_checks(run.checks())
    if run.test.request_groups:
        raise HarnessGap("unexpected record shape for UDPRoute (request groups recorded)")
    address = run.checker.gateway_address((INFRA, "udp-gateway"), "coredns")
    try:
        rq.wait_consistent(lambda: rq.dns_whoami_probe(address, "foo.bar.com."), interval=1.0,
                           limit=run.replayer.limit)
    except rq.NotConsistent as exc:
        raise StepFailed("DNS query foo.bar.com. through the Gateway", str(exc)) from exc


def httproute_service_types(run: TestRun) -> None:
    """Upstream HTTPRouteServiceTypes fills the selector-less Services' EndpointSlices with
    the infra-backend-v1 pods before checking."""
    run.world.fill_manual_endpoint_slices(run.file, INFRA, "infra-backend-v1")
    default(run)


def httproute_weight(run: TestRun) -> None:
    """Upstream HTTPRouteWeight: one consistency check, then the distribution."""
    run.run_checks(run.checks())
    groups = run.test.request_groups
    consistent = [g for g in groups if not g.get("expect", "").startswith("response (custom")]
    loops = [g for g in groups if g.get("expect", "").startswith("response (custom")]
    run.run_groups(consistent)
    dists = run.test.record.get("weightedDistribution") or []
    if not loops or not dists:
        raise HarnessGap("weighted distribution without its request or weights")
    target = run.replayer.target(loops[0])
    for d in dists:
        try:
            run.replayer.weighted_distribution(target, loops[0]["cases"][0], d["expectedWeights"])
        except CheckFailed as exc:
            raise StepFailed("weighted distribution", str(exc)) from exc


def grpcroute_weight(run: TestRun) -> None:
    """Upstream GRPCRouteWeight: after the checks, one eventually consistent Echo call
    (code OK, the namespace), then the distribution of calls over the weighted backends."""
    run.run_checks(run.checks())
    groups = run.test.request_groups
    dists = run.test.record.get("weightedDistribution") or []
    if len(groups) != 1 or groups[0].get("protocol") != "grpc" or len(groups[0].get("cases")
                                                                      or []) != 1 \
            or not dists:
        raise HarnessGap("gRPC weighted distribution without its call or weights")
    run.run_groups(groups)
    target = run.replayer.target(groups[0], run.default_gateway())
    for d in dists:
        try:
            run.replayer.grpc_weighted_distribution(target, groups[0]["cases"][0],
                                                    d["expectedWeights"])
        except CheckFailed as exc:
            raise StepFailed("grpc weighted distribution", str(exc)) from exc


def tcproute_weighted(run: TestRun) -> None:
    """Upstream TCPRouteWeightedRouting: after the checks, the connection distribution
    over the route's weighted backends (the recorded group only names the target)."""
    run.run_checks(run.checks())
    groups = run.test.request_groups
    dists = run.test.record.get("weightedDistribution") or []
    if len(groups) != 1 or groups[0].get("protocol") != "tcp" or not dists:
        raise HarnessGap("TCP weighted distribution without its target or weights")
    target = run.replayer.target(groups[0], run.default_gateway())
    # upstream: tcp.ExpectAddressBeAvailable, then tcp.ExpectEchoResponse, then the loop
    try:
        rq.wait_consistent(lambda: rq.tcp_connect_probe(target.address), threshold=1,
                           interval=rq.PROBE_INTERVAL_S, limit=run.replayer.limit)
        rq.wait_consistent(lambda: rq.tcp_echo_probe(target.address), threshold=1,
                           interval=rq.PROBE_INTERVAL_S, limit=run.replayer.limit)
    except rq.NotConsistent as exc:
        raise StepFailed("tcp echo before the distribution", str(exc)) from exc
    for d in dists:
        try:
            run.replayer.tcp_weighted_distribution(target, d["expectedWeights"])
        except CheckFailed as exc:
            raise StepFailed("tcp weighted distribution", str(exc)) from exc


def backend_weights_headers(run: TestRun) -> None:
    run.run_checks(run.checks())
    groups = run.test.request_groups
    loops = [g for g in groups if g.get("expect", "").startswith("response (custom")]
    run.run_groups([g for g in groups if g not in loops])
    for g in loops:
        try:
            run.replayer.header_per_backend(run.replayer.target(g), g["cases"][0])
        except CheckFailed as exc:
            raise StepFailed("backend header per request", str(exc)) from exc


def percentage_mirror(run: TestRun) -> None:
    run.run_checks(run.checks())
    for g in run.test.request_groups:
        target = run.replayer.target(g)
        for i, case in enumerate(g.get("cases") or []):
            run.replayer.run_group(g,
                                   cases=[dict(case, expect={k: v for k, v in case["expect"].items()
                                                              if k != "mirroredTo"})])
            try:
                run.replayer.percentage_mirror(target, case)
            except CheckFailed as exc:
                raise StepFailed(f"case {i} {case['request'].get('path')}", str(exc)) from exc


RECONCILE_CTX = ("Changing the content of a ConfigMap used by BackendTLSPolicy as CA certificate "
                 "should be reconciled by the controller")


def _policy_condition(run: TestRun, policy: str, gw: str, type_: str, status: str,
                      reason: str) -> None:
    try:
        run.checker.BackendTLSPolicyMustHaveCondition({"Name": policy, "Namespace": INFRA},
                                                      {"Name": gw, "Namespace": INFRA},
                                                      {"Type": type_, "Status": status,
                                                       "Reason": reason})
    except CheckFailed as exc:
        raise StepFailed("BackendTLSPolicyMustHaveCondition", str(exc)) from exc


def backendtlspolicy(run: TestRun) -> None:
    """Upstream BackendTLSPolicy: the recorded checks and requests, then its last
    subtest, made from the Go code: reconcile-test is pointed at a ConfigMap that does
    not exist yet (Accepted=False/NoValidCACertificate, ResolvedRefs=False/
    InvalidCACertificateRef), the ConfigMap is created with tls-checks-ca-certificate's
    ca.crt (both True), emptied (both False), restored (both True), and the policy's
    references are restored."""
    run.run_checks(
        [c for c in run.test.status_checks if RECONCILE_CTX not in (c.get("context") or [])])
    run.run_groups(run.test.request_groups)
    valid = (("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs"))
    invalid = (("Accepted", "False", "NoValidCACertificate"),
               ("ResolvedRefs", "False", "InvalidCACertificateRef"))
    policy, gw, cm_name = ("reconcile-test", "same-namespace",
                           "tls-checks-ca-certificate-reconcile-test")

    def expect(conds: tuple[tuple[str, str, str], ...]) -> None:
        for c in conds:
            _policy_condition(run, policy, gw, *c)

    expect(valid)
    shared = run.world.configmaps().get((INFRA, "tls-checks-ca-certificate"))
    if shared is None:
        raise StepFailed("get", f"ConfigMap {INFRA}/tls-checks-ca-certificate not found")
    original_ca = (shared.get("data") or {}).get("ca.crt", "")
    original_refs = copy.deepcopy(run.object("BackendTLSPolicy", INFRA,
                                             policy)["spec"]["validation"]
                                  ["caCertificateRefs"])
    run.update("BackendTLSPolicy", INFRA, policy, lambda o: o["spec"]["validation"].__setitem__(
        "caCertificateRefs", [{"group": "", "kind": "ConfigMap", "name": cm_name}]))
    expect(invalid)
    cm: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": cm_name, "namespace": INFRA},
                          "data": {"ca.crt": original_ca}}
    run.world.files[run.file].objects.append(cm)
    run.world.rewrite(run.file)
    expect(valid)
    cm["data"]["ca.crt"] = ""
    run.world.rewrite(run.file)
    expect(invalid)
    cm["data"]["ca.crt"] = original_ca
    run.world.rewrite(run.file)
    expect(valid)
    run.update("BackendTLSPolicy", INFRA, policy, lambda o: o["spec"]["validation"].__setitem__(
        "caCertificateRefs", original_refs))


def backendtlspolicy_observed_generation_bump(run: TestRun) -> None:
    """Upstream BackendTLSPolicyObservedGenerationBump, from the Go code: the namespace
    is ready, the policy's ancestor conditions are at its generation (one look, no
    polling), its hostname is changed to foo.example.com, it is Accepted for the
    Gateway again, its conditions are at the new generation, which has moved."""
    policy, gw = "observed-generation-bump", "same-namespace"
    run.run_checks([c for c in run.test.status_checks if c["helper"] == "NamespacesMustBeReady"])

    def latest(step: str) -> int:
        item = run.checker.admin.statuses().get(("BackendTLSPolicy", INFRA, policy))
        if item is None:
            if not run.world.exists("BackendTLSPolicy", INFRA, policy):
                raise StepFailed(step, f"BackendTLSPolicy {INFRA}/{policy} not found")
            return 0  # no status yet: no ancestor to be stale (upstream reads the same)
        for a in (item.get("status") or {}).get("ancestors") or []:
            stale = stale_conditions(item, a.get("conditions") or [])
            if stale:
                raise StepFailed(step, f"BackendTLSPolicy {INFRA}/{policy}: {stale}")
        return int((item.get("metadata") or {}).get("generation") or 0)

    before = latest("BackendTLSPolicyMustHaveLatestConditions")
    run.update("BackendTLSPolicy", INFRA, policy,
               lambda o: o["spec"]["validation"].__setitem__("hostname", "foo.example.com"))
    _policy_condition(run, policy, gw, "Accepted", "True", "")
    after = latest("BackendTLSPolicyMustHaveLatestConditions")
    if after == before:
        raise StepFailed("generation", "generation should change after an update")


def gateway_static_addresses(run: TestRun) -> None:
    """Upstream GatewayStaticAddresses, from the Go code: the Gateway's three addresses
    (invalid type, unusable, usable: the placeholders the harness overlays as upstream's
    applier, ``loader.rewrite_gateway``) make it Accepted=False/UnsupportedAddress; the
    invalid one is patched out (Accepted=True, Programmed=False/AddressNotUsable), then
    the unusable one (Accepted and Programmed True, the listener as upstream expects), and
    status.addresses must become exactly the usable address, of its type."""
    gw = "gateway-static-addresses"
    checks = run.test.status_checks
    helpers = [c["helper"] for c in checks]
    if helpers != ["GatewayMustHaveLatestConditions"] + ["GatewayMustHaveCondition"] * 4 \
            + ["GatewayStatusMustHaveListeners"]:
        raise HarnessGap(f"unexpected record shape for GatewayStaticAddresses: {helpers}")
    latest, not_accepted, accepted, not_programmed, programmed, listeners = checks
    addresses = run.object("Gateway", INFRA, gw)["spec"].get("addresses") or []
    if len(addresses) != 3:
        raise StepFailed("addresses",
                         f"expected 3 addresses on the Gateway, one invalid, one usable and one "
                         f"unusable. somehow got {len(addresses)}")
    invalid, unusable, usable = (dict(a) for a in addresses)
    try:  # the pool's unusable address must be one nothing here can bind
        with socket.socket(socket.AF_INET) as probe:
            probe.bind((unusable["value"], 0))
        raise HarnessGap(
            f"the unusable address {unusable['value']} can be bound in this network namespace")
    except OSError:
        pass
    run.run_checks([latest, not_accepted])

    def without(value: str) -> Callable[[Obj], None]:
        return lambda o: o["spec"].__setitem__("addresses", [a for a in o["spec"]["addresses"]
                                                             if a.get("value") != value])

    run.update("Gateway", INFRA, gw, without(invalid["value"]))
    run.run_checks([latest, accepted, not_programmed])
    run.update("Gateway", INFRA, gw, without(unusable["value"]))
    run.run_checks([latest, accepted, programmed, listeners])

    def one_address(st: dict) -> str | None:
        obj = st.get(("Gateway", INFRA, gw))
        found = ((obj or {}).get("status") or {}).get("addresses") or []
        if len(found) != 1:
            return f"expected only 1 status address on Gateway, got {found}"
        return None
    try:
        run.checker.poll(f"status.addresses of {gw}", T_GATEWAY_ADDRESS, one_address)
    except CheckFailed as exc:
        raise StepFailed("status.addresses", str(exc)) from exc
    item = run.checker.admin.statuses()[("Gateway", INFRA, gw)]
    found = item["status"]["addresses"]
    values = [a.get("value") for a in found]
    for bad, what in ((unusable, "the unusable address"), (invalid, "the invalid address")):
        if bad["value"] in values:
            raise StepFailed("status.addresses",
                             f"should not contain {what} {bad['value']}: {found}")
    if usable["value"] not in values:
        raise StepFailed("status.addresses",
                         f"should contain the usable address {usable['value']}: {found}")
    for a in found:
        if a.get("value") == usable["value"] and a.get("type") != usable.get("type", "IPAddress"):
            raise StepFailed("status.addresses",
                             f"expected address type {usable.get('type')} for the usable "
                             f"address, got {a.get('type')}")


def httproute_backend_protocol_websocket(run: TestRun) -> None:
    """Upstream HTTPRouteBackendProtocolWebSocket, from the Go code: once the Gateway and
    backend-protocol-ws are accepted, a WebSocket to /ws through the Gateway (the backend
    port's appProtocol is kubernetes.io/ws) echoes a text and a binary frame; each attempt
    dials anew, until 3 in a row pass (http.AwaitConvergence)."""
    if len(run.test.status_checks) != 1 or run.test.request_groups:
        raise HarnessGap("unexpected record shape for HTTPRouteBackendProtocolWebSocket")
    run.run_checks(run.checks())
    address = run.checker.gateway_address((INFRA, "same-namespace"))
    origin = "ws://gateway/HTTPRouteBackendProtocolWebSocket/websocket_connection_should_reach_backend"
    try:
        rq.wait_consistent(lambda: rq.websocket_probe(address, origin), limit=run.replayer.limit)
    except rq.NotConsistent as exc:
        raise StepFailed("websocket connection should reach backend", str(exc)) from exc


#: Tests whose decisive steps the data does not record: skipped (before anything is
#: applied) with the reason, whatever is claimed, rather than passed on a partial replay.
NOT_REPLAYABLE: dict[str, str] = {
    "GatewayInfrastructure":
        "its assertions read the cluster resources generated for the Gateway (labels and "
        "annotations "
        "propagated); only the status checks are recorded, and standalone kgw generates no such "
        "resources",
}


SCENARIOS: dict[str, Callable[[TestRun], None]] = {
    "GatewayObservedGenerationBump": _observed_generation_bump(
        "Gateway", INFRA, "gateway-observed-generation-bump", _add_alternate_listener),
    "HTTPRouteObservedGenerationBump": _observed_generation_bump(
        "HTTPRoute", INFRA, "observed-generation-bump", _route_to_v2),
    "GatewayClassObservedGenerationBump": _observed_generation_bump(
        "GatewayClass", "", "gatewayclass-observed-generation-bump", _new_description),
    "GatewayModifyListeners": gateway_modify_listeners,
    "HTTPRouteReferenceGrant": httproute_reference_grant,
    "BackendTLSPolicy": backendtlspolicy,
    "BackendTLSPolicyObservedGenerationBump": backendtlspolicy_observed_generation_bump,
    "GatewayStaticAddresses": gateway_static_addresses,
    "HTTPRouteBackendProtocolWebSocket": httproute_backend_protocol_websocket,
    "HTTPRouteServiceTypes": httproute_service_types,
    "HTTPRouteWeight": httproute_weight,
    "HTTPRouteRequestHeaderModifierBackendWeights": backend_weights_headers,
    "HTTPRouteRequestPercentageMirror": percentage_mirror,
    "GRPCRouteWeight": grpcroute_weight,
    "TCPRouteWeightedRouting": tcproute_weighted,
    "TCPRouteReferenceGrant": tcproute_reference_grant,
    "TCPRouteMultipleRoutesAttachment": tcproute_multiple_routes_attachment,
    "UDPRoute": udproute_dns,
    "UDPRouteWeightedRouting": udproute_weighted,
    "UDPRouteReferenceGrant": udproute_reference_grant,
    "UDPRouteMultipleRoutesAttachment": udproute_multiple_routes_attachment,
}


def scenario_for(test: TestCase) -> Callable[[TestRun], None]:
    return SCENARIOS.get(test.name, default)


__all__ = ["TestRun", "StepFailed", "scenario_for", "SCENARIOS", "NOT_REPLAYABLE", "Replayer",
           "StatusChecker"]
