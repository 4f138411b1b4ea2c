"""Request groups: where to send, what to send, and the eventually-consistent loop.

A group's target is a Gateway (and optionally a listener): the address comes from the
Gateway's status and the port from its spec, as upstream's WaitForGatewayAddress does.
Cases run one after the other, each with upstream's 3-in-a-row rule.
"""

from __future__ import annotations

import concurrent.futures
import copy
import math
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conformance import requests as rq
from conformance.backends import backend_of_pod
from conformance.status_checks import CheckFailed, HarnessGap, StatusChecker

Obj = dict[str, Any]
MIRROR_ID_PARAM = "gateway-api-conformance-request-id"
MIRROR_LOG = "Echoing back request made to {} to client"
MIRROR_TIMEOUT_S = 60.0
UDP_WEIGHT_SEND_TIMEOUT_S = 2.0  # upstream udpEchoSendOnce's timeout in the UDP weighted test
RETRY_LOOP = "call:assertConsistentRetryBehaviour"


class CaseFailed(CheckFailed):
    def __init__(self, case: str, message: str) -> None:
        super().__init__(message)
        self.case = case


@dataclass
class Target:
    address: str
    scheme: str  # the group's protocol: http | https | grpc | tcp | tls | udp
    server_name: str = ""
    ca_pem: bytes = b""
    client_cert: tuple[bytes, bytes] | None = None
    use_tls: bool = False  # tcp: TLS first (TLS passthrough to a TLS-serving echo)

    def tcp(self) -> rq.TcpTarget:
        return rq.TcpTarget(self.address, use_tls=self.use_tls, server_name=self.server_name,
                            ca_pem=self.ca_pem)


def _placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<") and value.endswith(">")


def tcp_expectation(case: Obj) -> rq.TcpExpectation:
    """A tcp group's case (upstream tcp.ExpectedResponse, as recorded)."""
    fields = {"Backend": case.get("Backend"), "Namespace": case.get("Namespace"),
              "Hostname": case.get("Hostname") or "", "TLSProtocol": case.get("TLSProtocol") or ""}
    for name, value in fields.items():
        if _placeholder(value):
            raise HarnessGap(f"cannot resolve {name} {value} of a tcp case")
    if not fields["Backend"]:
        raise HarnessGap(f"tcp case without a Backend: {case}")
    return rq.TcpExpectation(backend=str(fields["Backend"]),
                             namespace=str(fields["Namespace"] or ""),
                             backend_is_tls=bool(case.get("BackendIsTLS")),
                             hostname=str(fields["Hostname"]),
                             tls_protocol=str(fields["TLSProtocol"]))


#: What the TLSRoute tests trust (their ``caString``): upstream reads the ca.crt of this
#: ConfigMap, the CA that issued the TLS tcp-backend's certificate and the Terminate
#: listeners' (conformance/certs.py, as upstream's suite.go).
TLS_CHECKS_CA = "tls-checks-ca-certificate"
INFRA_NAMESPACE = "gateway-conformance-infra"

_HOSTNAMES = re.compile(r"<hostnames([A-Za-z]*)\[0\]>")


def fill_route_placeholders(group: Obj, objects: list[Obj]) -> Obj:
    """Resolve what a tcp/tls group records as expressions over the test's objects:
    ``<hostnames[0]>`` (the first ``spec.hostnames`` of the group's first TLSRoute),
    ``<hostnamesX[0]>`` (a Go variable named for a route: the first hostname of the
    test's TLSRoute whose name contains "x", as hostnamesTerminate names the
    ...-terminateroute), and ``<[]byte(caString)>`` (the ca.crt of TLS_CHECKS_CA, as
    upstream reads it). Anything else stays as recorded and is reported as a harness gap
    when used."""
    if group.get("protocol") not in ("tcp", "tls"):
        return group
    out = copy.deepcopy(group)
    routes = (out.get("target") or {}).get("routes") or []
    tls_routes = [o for o in objects if o.get("kind") == "TLSRoute"]

    def first_hostname(match: Callable[[Obj], bool]) -> str | None:
        for o in tls_routes:
            hosts = (o.get("spec") or {}).get("hostnames") or []
            if match(o) and hosts:
                return str(hosts[0])
        return None

    def resolve(m: re.Match) -> str:
        suffix = m.group(1).lower()
        if suffix:
            found = first_hostname(
                lambda o: suffix in str((o.get("metadata") or {}).get("name", "")))
        elif routes:
            want = (routes[0].get("Namespace") or "", routes[0].get("Name") or "")
            found = first_hostname(lambda o: ((o.get("metadata") or {}).get("namespace") or "",
                                              (o.get("metadata") or {}).get("name")) == want)
        else:
            found = None
        return found if found is not None else m.group(0)

    out = _replace_pattern(out, _HOSTNAMES, resolve)
    if out.get("trustedServerCert") == "<[]byte(caString)>":
        out["trustedServerCert"] = {"fn": "kubernetes.GetConfigMapData", "key": "ca.crt", "args": [
            "<suite.Client>", "<suite.TimeoutConfig>",
            {"Name": TLS_CHECKS_CA, "Namespace": INFRA_NAMESPACE}]}
    return out


def _replace_pattern(value: Any, pattern: re.Pattern, fn: Callable[[re.Match], str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(fn, value)
    if isinstance(value, list):
        return [_replace_pattern(v, pattern, fn) for v in value]
    if isinstance(value, dict):
        return {k: _replace_pattern(v, pattern, fn) for k, v in value.items()}
    return value


def case_name(i: int, case: Obj) -> str:
    """Upstream GetTestCaseName."""
    if case.get("name"):
        return case["name"]
    req, exp = case.get("request") or {}, case.get("expect") or {}
    hdr = " with headers" if req.get("headers") else ""
    base = f"{i} request to '{req.get('host', '')}{req.get('path', '')}'{hdr}"
    if exp.get("backendPodPrefix"):
        return f"{base} should go to {exp['backendPodPrefix']}"
    return f"{base} should receive a {(exp.get('statusCodes') or [200])[0]}"


def _replace_uuid(value: Any, u: str) -> Any:
    if isinstance(value, str):
        return value.replace("<uuid>", u)
    if isinstance(value, list):
        return [_replace_uuid(v, u) for v in value]
    if isinstance(value, dict):
        return {k: _replace_uuid(v, u) for k, v in value.items()}
    return value


def with_request_id(path: str, rid: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{MIRROR_ID_PARAM}={rid}"


class Replayer:
    def __init__(self, checker: StatusChecker, *,
                 secret_pair: Callable[[str, str], tuple[bytes, bytes]],
                 mirror_log_has: Callable[[str, str, str], bool],
                 mirror_log_count: Callable[[str, str, str], int],
                 limit: float = rq.MAX_TIME_TO_CONSISTENCY_S,
                 log: Callable[[str], None] = lambda m: None,
                 ca_pem: Callable[[str, str], bytes] | None = None) -> None:
        self.checker = checker
        self.secret_pair = secret_pair
        #: (namespace, ConfigMap name) -> the CA certificate its ca.crt holds
        self.ca_pem = ca_pem
        self.mirror_log_has = mirror_log_has
        self.mirror_log_count = mirror_log_count
        self.limit = limit
        self.log = log

    # -- targets --

    def target(self, group: Obj, default_gateway: Obj | None = None) -> Target:
        """Where a group's requests go. Targets recorded only as an expression over the
        test's ``gwAddr`` use the Gateway of the test's first address-giving check."""
        t = group["target"]
        gw = t.get("gateway") or default_gateway
        if gw is None:
            raise HarnessGap(f"request group {group.get('helper')} names no Gateway to send to")
        nn = (gw.get("Namespace") or "", gw["Name"])
        port = None
        if t.get("expr"):
            m = re.search(r'"(\d+)"', t["expr"])
            if not m:
                raise HarnessGap(f"cannot read a port from target expression {t['expr']!r}")
            port = int(m.group(1))
        listeners = t.get("listeners") or []
        proto = group.get("protocol", "http")
        if proto not in ("http", "https", "grpc", "tcp", "tls", "udp"):
            raise HarnessGap(f"{proto} requests are not replayed by the harness yet")
        server_name = group.get("tlsServerName") or ""
        if _placeholder(server_name):
            raise HarnessGap(f"cannot resolve the server name {server_name}")
        addr = self.checker.gateway_address(nn, listeners[0] if listeners else "", port=port)
        target = Target(addr, proto, server_name=server_name)
        if proto == "tcp" and group.get("useTLS"):
            ref = group.get("trustedServerCert")
            if ref and not isinstance(ref, dict):
                raise HarnessGap(f"cannot resolve the trusted certificate {ref}")
            target.use_tls = True
            target.ca_pem = self._secret_from(ref)[0] if ref else b""
        if proto == "https":
            target.ca_pem = self._secret_from(group["trustedServerCert"])[0] if group.get(
                "trustedServerCert") else b""
            if group.get("clientCertificate"):
                target.client_cert = self._secret_from(group["clientCertificate"])
        return target

    def _secret_from(self, ref: Obj) -> tuple[bytes, bytes]:
        """(certificate, key) of a recorded GetTLSSecret; a GetConfigMapData of a CA
        ConfigMap's ca.crt gives (its certificate, b"")."""
        args = ref.get("args") or []
        nn = next((a for a in args if isinstance(a, dict)), None)
        if ref.get("fn") == "kubernetes.GetConfigMapData" and nn is not None and ref.get(
            "key") == "ca.crt":
            try:
                if self.ca_pem is None:
                    raise KeyError(nn["Name"])
                return self.ca_pem(nn.get("Namespace", ""), nn["Name"]), b""
            except KeyError as exc:
                raise HarnessGap(f"CA ConfigMap {nn} is not generated by the harness") from exc
        if ref.get("fn") != "kubernetes.GetTLSSecret" or nn is None:
            raise HarnessGap(f"cannot resolve certificate reference {ref}")
        try:
            return self.secret_pair(nn.get("Namespace", ""), nn["Name"])
        except KeyError as exc:
            raise HarnessGap(f"secret {nn} is not generated by the harness") from exc

    def resolve_client_certs(self, request: Obj) -> Obj:
        """A case's ``clientCert`` (the certificate the backend must have been shown,
        recorded as a GetTLSSecret call) as the PEM text upstream compares."""
        ref = request.get("clientCert")
        if ref is None or isinstance(ref, str):
            return request
        if not isinstance(ref, dict):
            raise HarnessGap(f"cannot resolve the client certificate {ref!r}")
        return dict(request, clientCert=self._secret_from(ref)[0].decode())

    def build(self, target: Target, case: Obj, *, path: str | None = None,
              extra_headers: dict[str, str] | None = None,
              on_certificate_request: Callable[[], None] | None = None) -> rq.Request:
        req = case.get("request") or {}
        if req.get("protocol") not in (None, "", "HTTP", "HTTPS", "H2", "H2C_PRIOR_KNOWLEDGE"):
            raise HarnessGap(
                f"request protocol {req.get('protocol')} is not replayed by the harness")
        headers = list((req.get("headers") or {}).items()) + list((extra_headers or {}).items())
        headers.append(("X-Echo-Set-Header", rq.echo_set_header(req.get("echoSetResponseHeaders"))))
        return rq.Request(
            method=req.get("method") or "GET", scheme=target.scheme, address=target.address,
            path=path if path is not None else req.get("path", "/"), host=req.get("host") or "",
            headers=tuple(headers), protocol=req.get("protocol") or "",
            server_name=(req.get("sni") if target.scheme == "https" else "") or target.server_name,
            ca_pem=target.ca_pem, client_cert=target.client_cert,
            unfollow_redirect=req.get("followRedirects") is False,
            on_certificate_request=on_certificate_request)

    # -- groups --

    def run_group(self, group: Obj, *, cases: list[Obj] | None = None,
                  default_gateway: Obj | None = None) -> None:
        expect_kind = group.get("expect", "response")
        if expect_kind.startswith("response (custom loop"):
            if RETRY_LOOP not in (group.get("context") or []):
                raise HarnessGap(
                    f"custom request loop of {group.get('helper')} needs a test-specific replay")
            # upstream assertConsistentRetryBehaviour: AwaitConvergence over one request
            # per probe, each with a fresh <uuid> (a fresh attempt counter in the echo)
            expect_kind = "response"
        target = self.target(group, default_gateway)
        if target.scheme == "tcp":
            self.run_tcp_group(group, target, expect_kind, cases)
            return
        if target.scheme == "tls":
            self.run_tls_group(target, expect_kind)
            return
        if target.scheme == "udp":
            self.run_udp_group(group, target, expect_kind, cases)
            return
        if target.scheme == "grpc":
            self.run_grpc_group(group, target, expect_kind, cases)
            return
        for i, case in enumerate(group["cases"] if cases is None else cases):
            name = case_name(i, case)
            try:
                self.run_case(target, case, expect_kind)
            except (rq.NotConsistent, rq.WrongAnswer, CheckFailed) as exc:
                raise CaseFailed(name, f"{name}: {exc}") from exc

    def run_case(self, target: Target, case: Obj, expect_kind: str = "response") -> None:
        expect = case.get("expect") or {}
        mirrors = expect.get("mirroredTo") or []
        rid = str(uuid.uuid4()) if mirrors else ""
        sent_path: list[str] = []
        # upstream's TLS helpers: the client certificate is handed over from Go's
        # GetClientCertificate hook, and the server must have asked for it at least once
        asked: list[bool] = []
        hook = (lambda: asked.append(True)) if target.client_cert else None

        def probe() -> str | None:
            u = str(uuid.uuid4())
            c = _replace_uuid(case, u)
            req_path = c["request"].get("path", "/")
            exp = c.get("expect") or {}
            if rid:
                req_path = with_request_id(req_path, rid)
                if exp.get("backendRequest"):
                    exp = copy.deepcopy(exp)
                    exp["backendRequest"]["path"] = with_request_id(exp["backendRequest"]["path"],
                                                                    rid)
            request = self.build(target, c, path=req_path, on_certificate_request=hook)
            sent_path[:] = [req_path]
            try:
                creq, cres = rq.round_trip(request)
            except rq.RequestError as exc:
                return None if expect_kind == "failure" else f"request failed: {exc}"
            if expect_kind == "failure":
                return f"expected the round trip to fail, got a {cres.status} response"
            if expect_kind == "failure-not-200":
                if rq.is_timeout_code(cres.status):
                    return f"timeout status {cres.status} (retried)"
                if cres.status == 200:  # upstream: t.Fatalf at once, no retry
                    raise rq.WrongAnswer(
                        "the request should fail, returned HTTP status OK (200) instead")
                return None
            sent = self.resolve_client_certs(dict(c["request"], path=req_path))
            return rq.compare(request, creq, cres, exp, sent=sent)

        rq.wait_consistent(probe, limit=self.limit)
        if target.client_cert and not asked:
            raise CheckFailed("client certificate was not presented during the handshake "
                              "(the server never asked for one)")
        for m in mirrors:
            self.expect_mirrored(m["BackendRef"], sent_path[0])

    def run_tcp_group(self, group: Obj, target: Target, expect_kind: str,
                      cases: list[Obj] | None = None) -> None:
        """Upstream tcp.MakeTCPRequestAndExpectEventuallyValidResponse for each case: a new
        connection per attempt, each case eventually consistent."""
        if expect_kind != "response":
            raise HarnessGap(f"tcp requests expecting {expect_kind!r} need a test-specific replay")
        for i, case in enumerate(group["cases"] if cases is None else cases):
            expected = tcp_expectation(case)
            name = f"{i} tcp connection should reach {expected.namespace}/{expected.backend}"
            try:
                rq.wait_consistent(lambda: rq.tcp_probe(target.tcp(), expected), limit=self.limit)  # noqa: B023
            except (rq.NotConsistent, rq.WrongAnswer) as exc:
                raise CaseFailed(name, f"{name}: {exc}") from exc

    def run_udp_group(self, group: Obj, target: Target, expect_kind: str,
                      cases: list[Obj] | None = None) -> None:
        """The udp helpers as recorded: ``response`` (ExpectEchoResponseFromBackend) wants
        each case's answer from a pod of its Service in its namespace; ``any-echo``
        (ExpectEchoResponse) wants an answer from any echo. A new socket (a new flow) per
        attempt, each case eventually consistent (3 in a row, 100 ms apart, 30 s)."""
        if expect_kind == "any-echo":
            name = f"UDP echo via {target.address} should answer"
            try:
                rq.wait_consistent(lambda: rq.udp_probe(target.address), limit=self.limit)
            except rq.NotConsistent as exc:
                raise CaseFailed(name, f"{name}: {exc}") from exc
            return
        if expect_kind != "response":
            raise HarnessGap(
                f"udp requests expecting {expect_kind!r} are not replayed by the harness")
        for i, case in enumerate(group["cases"] if cases is None else cases):
            service, namespace = case.get("Service"), case.get("Namespace")
            if not service or not namespace or _placeholder(service) or _placeholder(namespace):
                raise HarnessGap(f"udp case without a Service and Namespace: {case}")
            name = f"{i} udp echo should reach {namespace}/{service}"
            try:
                rq.wait_consistent(lambda: rq.udp_probe(target.address, service, namespace),  # noqa: B023
                                   limit=self.limit)
            except rq.NotConsistent as exc:
                raise CaseFailed(name, f"{name}: {exc}") from exc

    def run_grpc_group(self, group: Obj, target: Target, expect_kind: str,
                       cases: list[Obj] | None = None) -> None:
        """Upstream grpc.MakeRequestAndExpectEventuallyConsistentResponse (``response``)
        and ...Failure (``failure``) for each case: one client per case (clear text, the
        case's authority), each case eventually consistent (``conformance.grpc_requests``)."""
        from conformance import grpc_requests as gq

        if expect_kind not in ("response", "failure"):
            raise HarnessGap(
                f"grpc requests expecting {expect_kind!r} are not replayed by the harness")
        probe = gq.response_probe if expect_kind == "response" else gq.failure_probe
        for i, raw in enumerate(group["cases"] if cases is None else cases):
            try:
                case = gq.GrpcCase.from_record(raw)
            except gq.CaseError as exc:
                raise HarnessGap(str(exc)) from exc
            name = case.test_case_name(i)
            with gq.GrpcClient(target.address, case.authority) as client:
                try:
                    rq.wait_consistent(lambda: probe(client, case), limit=self.limit)  # noqa: B023
                except (rq.NotConsistent, rq.WrongAnswer) as exc:
                    raise CaseFailed(name, f"{name}: {exc}") from exc

    def run_tls_group(self, target: Target, expect_kind: str) -> None:
        """Upstream tls.MakeTLSConnectionAndExpectEventuallyConnectionRejection: the
        handshake with the group's server name ends in EOF or a reset."""
        if expect_kind != "connection-rejected":
            raise HarnessGap(
                f"tls requests expecting {expect_kind!r} are not replayed by the harness")
        name = f"TLS connection with server name {target.server_name!r} should be rejected"
        try:
            rq.wait_consistent(lambda: rq.tls_rejection_probe(target.address, target.server_name),
                               limit=self.limit)
        except rq.NotConsistent as exc:
            raise CaseFailed(name, f"{name}: {exc}") from exc

    def expect_mirrored(self, ref: Obj, path: str) -> None:
        """Upstream ExpectMirroredRequest: the mirror backend logged the request."""
        ns, name = ref.get("Namespace") or "", ref.get("Name") or ""
        if not name:
            raise HarnessGap("mirrored BackendRef without a name")
        needle = MIRROR_LOG.format(path)
        deadline = time.monotonic() + min(MIRROR_TIMEOUT_S, self.limit * 2)
        while not self.mirror_log_has(ns, name, needle):
            if time.monotonic() > deadline:
                raise CheckFailed(f"couldn't find mirrored request {path!r} in {ns}/{name} logs")
            time.sleep(0.1)

    # -- distributions --

    def weighted_distribution(self, target: Target, case: Obj, weights: dict[str, float], *,
                              total: int = 500, concurrency: int = 10, tolerance: float = 0.05,
                              retries: int = 10) -> None:
        """Upstream weight.TestWeightedDistribution, retried up to weight.MaxTestRetries."""
        errors = []
        for attempt in range(retries):
            err = self._one_distribution(target, case, weights, total, concurrency, tolerance)
            if err is None:
                return
            errors.append(err)
            self.log(f"weighted distribution attempt {attempt + 1}: {err}")
        raise CheckFailed(f"weighted distribution failed {retries} times; last: {errors[-1]}")

    def _one_distribution(self, target: Target, case: Obj, weights: dict[str, float], total: int,
                          concurrency: int, tolerance: float) -> str | None:
        def send(_: int) -> str:
            # upstream AddEntropy: half the requests carry X-Jitter with a random value
            jitter = {"X-Jitter": str(random.randrange(10000))} if random.randrange(2) else {}
            request = self.build(target, case, extra_headers=jitter)
            creq, cres = rq.round_trip(request)
            why = rq.compare(request, creq, cres, case.get("expect") or {},
                             sent=case.get("request"))
            if why:
                raise CheckFailed(f"response expectation failed for request: {why}")
            return creq.pod

        return distribution_error(send, weights, total, concurrency, tolerance)

    def tcp_weighted_distribution(self, target: Target, weights: dict[str, float], *,
                                  total: int = 500,
                                  concurrency: int = 10, tolerance: float = 0.05,
                                  retries: int = 10) -> None:
        """The TCP weighted test: ``total`` connections (``concurrency`` at a time), each
        attributed to the backend named by the pod in its TEST answer minus the pod's last
        two name parts (upstream EchoSendOnce), every backend within ``tolerance`` of its
        weight and weight 0 getting nothing; retried up to weight.MaxTestRetries times."""
        errors = []
        for attempt in range(retries):
            err = distribution_error(lambda _: rq.tcp_echo_pod(target.address,
                                                               rq.REQUEST_TIMEOUT_S), weights,
                                     total, concurrency, tolerance)
            if err is None:
                return
            errors.append(err)
            self.log(f"tcp weighted distribution attempt {attempt + 1}: {err}")
        raise CheckFailed(f"weighted distribution failed {retries} times; last: {errors[-1]}")

    def udp_weighted_distribution(self, target: Target, weights: dict[str, float], *,
                                  total: int = 500,
                                  concurrency: int = 10, tolerance: float = 0.05,
                                  retries: int = 10) -> None:
        """The UDP weighted test (upstream weight.TestWeightedDistribution over UDP echo):
        ``total`` exchanges, each on a new socket (so a new flow and a fresh pick),
        ``concurrency`` at a time, attributed to the pod name minus its last two parts;
        every backend within ``tolerance`` of its weight, weight 0 getting nothing;
        retried up to weight.MaxTestRetries times."""
        errors = []
        for attempt in range(retries):
            err = distribution_error(lambda _: rq.udp_echo_pod(target.address,
                                                               UDP_WEIGHT_SEND_TIMEOUT_S),
                                     weights, total, concurrency, tolerance)
            if err is None:
                return
            errors.append(err)
            self.log(f"udp weighted distribution attempt {attempt + 1}: {err}")
        raise CheckFailed(f"weighted distribution failed {retries} times; last: {errors[-1]}")

    def grpc_weighted_distribution(self, target: Target, case: Obj, weights: dict[str, float], *,
                                   total: int = 500, concurrency: int = 10, tolerance: float = 0.05,
                                   retries: int = 10) -> None:
        """GRPCRouteWeight's loop (upstream weight.TestWeightedDistribution over gRPC Echo
        calls): ``total`` calls, each on a new client with upstream's entropy, attributed
        to the answering pod minus its last two name parts; retried up to
        weight.MaxTestRetries times."""
        from conformance import grpc_requests as gq

        try:
            grpc_case = gq.GrpcCase.from_record(case)
        except gq.CaseError as exc:
            raise HarnessGap(str(exc)) from exc
        entropy = gq.Entropy()
        errors = []
        for attempt in range(retries):
            err = distribution_error(lambda _: gq.echo_pod(target.address, grpc_case, entropy),
                                     weights, total, concurrency, tolerance)
            if err is None:
                return
            errors.append(err)
            self.log(f"grpc weighted distribution attempt {attempt + 1}: {err}")
        raise CheckFailed(f"weighted distribution failed {retries} times; last: {errors[-1]}")

    def header_per_backend(self, target: Target, case: Obj, *, total: int = 100,
                           header: str = "Backend") -> None:
        """Upstream HTTPRouteRequestHeaderModifierBackendWeights' loop: ``total`` requests,
        each must round-trip, the echo must report exactly one ``Backend`` value (the
        header each backendRef's filter sets; the echo's map key, Go's canonical name) and
        the pod that served it must start with that value. Any miss fails at once."""
        for i in range(total):
            request = self.build(target, case)
            try:
                creq, _ = rq.round_trip(request)
            except rq.RequestError as exc:
                raise CheckFailed(f"request {i}: failed to roundtrip request: {exc}") from exc
            values = creq.headers.get(header) or []
            if len(values) != 1:
                raise CheckFailed(f"request {i}: expected a single {header!r} header to have been "
                                  f"set, got {len(values)} (pod {creq.pod or 'unknown'})")
            if not creq.pod.startswith(values[0]):
                raise CheckFailed(f"request {i}: {header} header {values[0]!r} does not match pod "
                                  f"{creq.pod!r} (backend {backend_of_pod(creq.pod)})")

    def percentage_mirror(self, target: Target, case: Obj, *, rounds: int = 5, total: int = 500,
                          concurrency: int = 10) -> None:
        """Upstream HTTPRoutePercentageMirror's distribution check: a round sends ``total``
        requests (each one eventually consistent, one success needed) with a fresh
        request id, then counts the mirror backends' log lines for it, which must be
        within 3 binomial standard deviations of total*percent/100. The first round that
        passes ends the check; ``rounds`` failures fail it."""
        exp = case.get("expect") or {}
        mirrors = exp.get("mirroredTo") or []
        errors: list[str] = []
        for r in range(rounds):
            rid = str(uuid.uuid4())
            path = with_request_id(case["request"].get("path", "/"), rid)
            exp_r = copy.deepcopy(exp)
            if exp_r.get("backendRequest"):
                exp_r["backendRequest"]["path"] = path
            exp_r.pop("mirroredTo", None)

            def send(_: int) -> None:
                def probe() -> str | None:
                    request = self.build(target, case, path=path)  # noqa: B023
                    try:
                        creq, cres = rq.round_trip(request)
                    except rq.RequestError as exc:
                        return f"request failed: {exc}"
                    return rq.compare(request, creq, cres, exp_r,  # noqa: B023
                                      sent=dict(case["request"], path=path))  # noqa: B023
                rq.wait_consistent(probe, threshold=1, limit=self.limit)

            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
                try:
                    list(pool.map(send, range(total)))
                except rq.NotConsistent as exc:
                    raise CheckFailed(f"round {r + 1}: {exc}") from exc
            needle = MIRROR_LOG.format(path)
            errs = []
            for m in mirrors:
                ref, pct = m["BackendRef"], float(m.get("Percent") or 100)
                count = self._settled_count(ref.get("Namespace", ""), ref["Name"], needle)
                p = pct / 100.0
                mean, sd = total * p, math.sqrt(total * p * (1 - p))
                if abs(count - mean) > 3 * sd:
                    errs.append(f"{count}/{total} requests mirrored to {ref['Name']}, "
                                f"want {mean:.0f} ± {3 * sd:.1f} ({pct:g}%)")
            if not errs:
                return
            errors.append(f"round {r + 1}: {'; '.join(errs)}")
            self.log(errors[-1])
        raise CheckFailed(f"mirror distribution failed {rounds} times; last: {errors[-1]}")

    def _settled_count(self, ns: str, name: str, needle: str) -> int:
        """Mirrors are fire-and-forget: wait until the count stops moving (0.5 s)."""
        last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 15
        while time.monotonic() < deadline:
            n = self.mirror_log_count(ns, name, needle)
            if n != last:
                last, stable_since = n, time.monotonic()
            elif time.monotonic() - stable_since > 0.5:
                break
            time.sleep(0.1)
        return last


def distribution_error(send: Callable[[int], str], weights: dict[str, float], total: int,
                       concurrency: int, tolerance: float) -> str | None:
    """Upstream weight.TestWeightedDistribution: send ``total`` probes, ``concurrency``
    at a time (``send`` returns the pod that answered; RequestError or CheckFailed end
    the round), attribute each pod to the backend named by the pod name minus its last
    two parts (exactly: a pod of another Deployment is unexpected), then compare each
    backend's share with its weight; ``None`` when within tolerance, else why not."""
    seen: dict[str, int] = {}
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        try:
            for pod in pool.map(send, range(total)):
                backend = backend_of_pod(pod)
                if backend not in weights:
                    return (
                        f"request was handled by an unexpected pod {pod!r} (extracted backend: "
                        f"{backend!r})")
                seen[backend] = seen.get(backend, 0) + 1
        except (rq.RequestError, CheckFailed) as exc:
            return f"error while sending requests: {exc}"
    errs = []
    active = sum(1 for w in weights.values() if w > 0.0)
    if len(seen) != active:
        errs.append(f"expected {active} backends to receive traffic, but got {len(seen)}")
    for backend, want in weights.items():
        if backend not in seen and want != 0.0:
            errs.append(f"expect traffic to hit backend {backend!r} - but none was received")
            continue
        got = seen.get(backend, 0) / total
        if abs(got - want) > tolerance:
            errs.append(f"backend {backend!r} weighted traffic of {got:g} not within tolerance "
                        f"{want:g} (+/-{tolerance:f})")
    return "; ".join(sorted(errs)) or None
