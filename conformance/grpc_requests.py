"""Replaying gRPC request cases with upstream's rules (conformance/utils/grpc), with a
grpcio client calling the suite's GrpcEcho service (``kgw_l7/grpcecho.proto``).

- A case (upstream ``ExpectedResponse``) calls Echo, EchoTwo or EchoThree with an empty
  ``EchoRequest``, the case's metadata (names lower-cased, as Go's ``metadata.New``) and,
  when given, its ``:authority`` (Go's ``grpc.WithAuthority``).
- One client (one channel, clear text: upstream dials with insecure credentials) per
  case, reused by every probe of the case and closed after it, as upstream's
  ``DefaultClient``; a call ending INTERNAL resets the channel, as upstream does.
- Comparison (upstream ``compareResponse``): the status code; when OK, the echoed fully
  qualified method, the namespace (when the case names one) and the pod-name prefix.
  Only these: upstream does not compare the echoed metadata (the records mark those
  expectations ``expectedHeaders_NOT_CHECKED_UPSTREAM``, and GRPCRouteRequestHeaderModifier's
  contradict its own manifest, whose three rules for Echo have the same match).
- Eventual consistency as the HTTP cases (``requests.wait_consistent``: 3 in a row, 100 ms
  after a failure, 30 s), each call bounded by the 10 s request timeout (upstream gives a
  call what is left of the 30 s).
- ``MakeRequestAndExpectEventuallyConsistentFailure``: any code but OK counts; an OK
  fails the case at once (upstream ``t.Fatalf``).

The channel does not use an HTTP proxy from the environment, and reconnects at most a
second after a failed connection (grpc's default backoff grows to 2 minutes, longer than a
case may take; upstream's client has the same default, its cluster rarely needs it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import grpc

from conformance.requests import REQUEST_TIMEOUT_S, WrongAnswer

SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
METHODS = ("Echo", "EchoTwo", "EchoThree")
RECONNECT_BACKOFF_MS = 1000


class CaseError(ValueError):
    """A recorded case the replay cannot make (the replayer reports it as a harness gap)."""


def echo_modules() -> tuple[Any, Any]:
    """The GrpcEcho messages and stubs, compiled from the proto kgw echo serves."""
    from kgw_l7.echo import grpcecho as grpc_echo

    return grpc_echo.load()


@dataclass(frozen=True)
class GrpcCase:
    """Upstream grpc.ExpectedResponse, as recorded in a case."""

    method: str  # Echo | EchoTwo | EchoThree
    authority: str = ""
    metadata: tuple[tuple[str, str], ...] = ()
    code: grpc.StatusCode = grpc.StatusCode.OK
    backend: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def fully_qualified_method(self) -> str:
        return f"/{SERVICE}/{self.method}"

    @classmethod
    def from_record(cls, case: dict[str, Any]) -> GrpcCase:
        req, exp = case.get("request") or {}, case.get("expect") or {}
        rpc = str(req.get("rpc") or "")
        service, _, method = rpc.lstrip("/").rpartition("/")
        if service != SERVICE or method not in METHODS:
            raise CaseError(f"gRPC case calls {rpc!r}, not a method of {SERVICE}")
        codes = {c.value[0]: c for c in grpc.StatusCode}
        raw = exp.get("grpcCode", 0)
        if not isinstance(raw, int) or raw not in codes:
            raise CaseError(f"gRPC case expects an unknown status code {raw!r}")
        metadata = req.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise CaseError(f"gRPC case metadata is not a map: {metadata!r}")
        return cls(method=method, authority=str(req.get("authority") or ""),
                   metadata=tuple((str(k), str(v)) for k, v in metadata.items()), code=codes[raw],
                   backend=str(exp.get("backendPodPrefix") or ""),
                   namespace=str(exp.get("backendNamespace") or ""),
                   name=str(case.get("name") or ""))

    def test_case_name(self, i: int) -> str:
        """Upstream ExpectedResponse.GetTestCaseName."""
        if self.name:
            return self.name
        headers = ""
        if self.metadata:
            pairs = ",".join(f"{k}:{v}" for k, v in sorted(self.metadata))
            headers = f" with headers '{{{pairs}}}'"
        base = f"{i} request to '{self.authority}{self.fully_qualified_method}'{headers}"
        if self.backend:
            return f"{base} should go to {self.backend}"
        return f"{base} should receive a {_code_name(self.code)} ({self.code.value[0]})"


def _code_name(code: grpc.StatusCode) -> str:
    """Go's codes.Code String(): CamelCase (Unimplemented, DeadlineExceeded, OK)."""
    return "OK" if code is grpc.StatusCode.OK else "".join(p.capitalize()
                                                           for p in code.name.split("_"))


@dataclass
class GrpcResponse:
    """Upstream grpc.Response: the code, the echo's answer when OK, and the metadata."""

    code: grpc.StatusCode
    details: str = ""
    response: Any = None
    headers: tuple[tuple[str, Any], ...] = ()
    trailers: tuple[tuple[str, Any], ...] = ()

    @property
    def pod(self) -> str:
        return self.response.assertions.context.pod if self.response is not None else ""


class GrpcClient:
    """Upstream DefaultClient: one channel to ``address``, opened on first use."""

    def __init__(self, address: str, authority: str = "") -> None:
        self.address = address
        self.authority = authority
        self._channel: grpc.Channel | None = None
        self.pb, self.services = echo_modules()

    def _stub(self) -> Any:
        if self._channel is None:
            options: list[tuple[str, Any]] = [
                ("grpc.enable_http_proxy", 0),
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS)]
            if self.authority:
                options.append(("grpc.default_authority", self.authority))
            self._channel = grpc.insecure_channel(self.address, options=options)
        return self.services.GrpcEchoStub(self._channel)

    def send(self, case: GrpcCase, timeout: float = REQUEST_TIMEOUT_S,
             extra_metadata: tuple[tuple[str, str], ...] = ()) -> GrpcResponse:
        """One call (upstream SendRPC): a status code, never an exception for a failed
        call."""
        stub = self._stub()
        metadata = tuple((k.lower(), v) for k, v in case.metadata + extra_metadata)
        call = getattr(stub, case.method)
        try:
            response, rpc = call.with_call(self.pb.EchoRequest(), timeout=timeout,
                                           metadata=metadata or None)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            out = GrpcResponse(code, exc.details() if hasattr(exc, "details") else str(exc),  # type: ignore[arg-type]
                               headers=tuple(exc.initial_metadata() or ())
                               if hasattr(exc, "initial_metadata") else (),
                               trailers=tuple(exc.trailing_metadata() or ())  # type: ignore[arg-type]
                               if hasattr(exc, "trailing_metadata") else ())
            if code is grpc.StatusCode.INTERNAL:
                self.close()  # upstream: "Received code Internal. Resetting connection."
            return out
        return GrpcResponse(grpc.StatusCode.OK, response=response,
                            headers=tuple(rpc.initial_metadata() or ()),
                            trailers=tuple(rpc.trailing_metadata() or ()))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def compare(case: GrpcCase, resp: GrpcResponse) -> str | None:
    """Upstream compareResponse; ``None`` when the response is the expected one."""
    if case.code is not resp.code:
        got = f"{_code_name(resp.code)} ({resp.code.value[0]})" + (f": {resp.details}"
                                                                   if resp.details else "")
        return (
            f"expected status code to be {_code_name(case.code)} ({case.code.value[0]}), but got "
            f"{got}")
    if resp.code is grpc.StatusCode.OK:
        assertions = resp.response.assertions
        if assertions.fully_qualified_method != case.fully_qualified_method:
            return (
                f"expected path to be {case.fully_qualified_method}, got "
                f"{assertions.fully_qualified_method}")
        if case.namespace and case.namespace != assertions.context.namespace:
            return f"expected namespace to be {case.namespace}, got {assertions.context.namespace}"
        if not assertions.context.pod.startswith(case.backend):
            return f"expected pod name to start with {case.backend}, got {assertions.context.pod}"
    return None


def response_probe(client: GrpcClient, case: GrpcCase,
                   timeout: float = REQUEST_TIMEOUT_S) -> str | None:
    """One attempt of MakeRequestAndExpectEventuallyConsistentResponse."""
    return compare(case, client.send(case, timeout))


def failure_probe(client: GrpcClient, case: GrpcCase,
                  timeout: float = REQUEST_TIMEOUT_S) -> str | None:
    """One attempt of MakeRequestAndExpectEventuallyConsistentFailure: any code but OK
    passes; OK fails the case at once."""
    resp = client.send(case, timeout)
    if resp.code is grpc.StatusCode.OK:
        raise WrongAnswer(
            f"Request should have failed, but got status OK (pod {resp.pod or 'unknown'})")
    return None


@dataclass
class Entropy:
    """Upstream grpc.AddEntropy: half the calls carry ``x-jitter`` with a random value."""

    rng: random.Random = field(default_factory=random.Random)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-jitter", str(self.rng.randrange(10000))),) if self.rng.randrange(2) else ()


def echo_pod(address: str, case: GrpcCase, entropy: Entropy | None = None,
             timeout: float = REQUEST_TIMEOUT_S) -> str:
    """GRPCRouteWeight's sender: one call on a new client (a new connection, as the
    suite's nil GRPCClient makes), with entropy; the pod that answered. Raises
    RequestError for a call that does not end OK."""
    from conformance.requests import RequestError

    with GrpcClient(address, case.authority) as client:
        resp = client.send(case, timeout, (entropy or Entropy()).metadata())
    if resp.code is not grpc.StatusCode.OK:
        raise RequestError(f"expected OK response, got {_code_name(resp.code)}: {resp.details}")
    return resp.pod
