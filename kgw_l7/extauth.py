"""External authorization without I/O: what the authorization service is asked, and what
its answer means (``kgw_l7.authcall`` carries the exchange; the exchange applies it).

The two protocols are Envoy's ext_authz ones, so the services written for Envoy (OPA's
Envoy plugin, oauth2-proxy, Authorino) work unchanged:

* **HTTP**: the check request has the request's method, its path (and query) behind the
  configured prefix, Host, Authorization, Content-Length (of the body sent along: 0 when
  none) and the allowed headers. 200 allows: the allowed response headers (all but Host
  and framing fields when none are listed) are set on the request to the backend. Any
  other status denies: that status, the service's headers and body go to the client.
* **gRPC**: ``envoy.service.auth.v3.Authorization/Check``. A ``CheckRequest`` with the
  peer's address and the request's method, path, host, scheme, protocol, headers (all,
  or the allowed ones) and body; ``status.code`` 0 allows (``ok_response``: headers set
  or appended, headers removed), anything else denies (``denied_response``: its status,
  403 when unset, its headers and body).

No answer (timeout, service down, a malformed answer, a gRPC error status) is *not* an
answer: the request is denied with ``status_on_error`` (403, as Envoy) unless the policy
says ``fail_open``. Nothing is cached: every request asks, so an answer can never serve
another request's credentials.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from kgw_l7.config import ExtAuth
from kgw_l7.events import HOP_BY_HOP

#: Fields of a message's framing or of a connection: never copied from an answer to a
#: request or to the client (kgw frames what it sends itself).
_FRAMING = HOP_BY_HOP | {b"content-length", b"host", b":authority"}
#: Not copied from an allowing HTTP answer into the request when every header is: they
#: describe the answer itself, not the request (a POST must keep its own content-type).
_OWN_FIELDS = _FRAMING | {b"content-type", b"date", b"server", b"content-encoding"}
#: Always in an HTTP check request (Gateway API HTTPAuthConfig, Envoy's http_service).
_HTTP_ALWAYS = frozenset({b"host", b"authorization"})
#: Largest answer body kept (a deny page); a larger answer is a failed check.
MAX_ANSWER = 64 * 1024
#: Largest request body sent along (Gateway API: forwardBody.maxSize is a uint16).
MAX_BODY = 65535


class AuthError(Exception):
    """The service gave no usable answer (the reason is for the log and access log)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """An answer: allowed (``set``/``add``/``remove`` change the request to the backend)
    or denied (``status``, ``headers`` and ``body`` are the client's response)."""

    allowed: bool
    status: int = 200
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    set: tuple[tuple[bytes, bytes], ...] = ()
    add: tuple[tuple[bytes, bytes], ...] = ()
    remove: tuple[bytes, ...] = ()
    #: Why, for the access log's details (a denial, or a failure let through).
    reason: str = ""
    #: The service gave no answer (this is ``status_on_error``, or failing open).
    failed: bool = False

    def apply(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The request's headers with this allowing answer's changes."""
        drop = {n for n, _ in self.set} | set(self.remove)
        out = [h for h in headers if h[0] not in drop] if drop else list(headers)
        out.extend(self.set)
        out.extend(self.add)
        return out

    @property
    def changes(self) -> bool:
        return bool(self.set or self.add or self.remove)


ALLOW = Decision(True)


class Settings:
    """An ``ExtAuth`` record compiled for the request path (``kgw_l7.router`` makes one per
    rule; ``backend`` is the service's ``CompiledBackend``)."""

    __slots__ = ("grpc", "backend", "prefix", "allowed", "response_allowed", "max_body",
                 "timeout", "fail_open", "status_on_error", "name")

    def __init__(self, cfg: ExtAuth, backend: Any) -> None:
        self.grpc = cfg.protocol == "GRPC"
        self.backend = backend
        self.name = cfg.backend.name
        self.prefix = cfg.path_prefix.rstrip("/").encode()
        self.allowed = frozenset(h.lower().encode() for h in cfg.allowed_headers)
        self.response_allowed = frozenset(h.lower().encode()
                                          for h in cfg.allowed_response_headers)
        self.max_body = max(0, min(cfg.max_body, MAX_BODY))
        self.timeout = cfg.timeout
        self.fail_open = cfg.fail_open
        self.status_on_error = cfg.status_on_error

    def on_error(self, reason: str) -> Decision:
        """The decision when the service gave no answer: fail closed unless told not to."""
        if self.fail_open:
            return Decision(True, reason="ext auth failed open: " + reason, failed=True)
        return Decision(False, self.status_on_error, reason="ext auth: " + reason, failed=True)


@dataclass(frozen=True, slots=True)
class Request:
    """What the service is told about the request being checked."""

    method: bytes
    target: bytes  # path and query, as received
    authority: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    #: Body bytes the request has in all (None: unknown yet, chunked).
    size: int | None
    peer: bytes  # client address, b"host:port" or b"host"
    scheme: bytes  # b"http" / b"https"
    version: bytes  # b"1.1", b"1.0", b"2"
    request_id: bytes = b""


# -- HTTP -------------------------------------------------------------------------------

def http_check(s: Settings, r: Request) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """The HTTP check request: (method, target, headers), the body being ``r.body``."""
    target = s.prefix + r.target if s.prefix else r.target
    headers = [(b"host", r.authority)] if r.authority else []
    allowed = s.allowed
    for n, v in r.headers:
        if n in _HTTP_ALWAYS and n != b"host" or n in allowed and n not in _FRAMING:
            headers.append((n, v))
    headers.append((b"content-length", b"%d" % len(r.body)))
    return r.method, target, headers


def http_decision(s: Settings, status: int, headers: tuple[tuple[bytes, bytes], ...],
                  body: bytes) -> Decision:
    """An HTTP service's answer: 200 allows, anything else denies with itself."""
    if status == 200:
        if s.response_allowed:
            chosen = tuple(h for h in headers if h[0] in s.response_allowed
                           and h[0] not in _FRAMING)
        else:
            chosen = tuple(h for h in headers if h[0] not in _OWN_FIELDS)
        return Decision(True, set=chosen)
    return Decision(False, status if 200 <= status <= 599 else 403,
                    tuple(h for h in headers if h[0] not in _FRAMING), body,
                    reason="ext auth denied (%d)" % status)


# -- gRPC -------------------------------------------------------------------------------

#: The gRPC method (a path on the service's HTTP/2 connection).
GRPC_PATH = b"/envoy.service.auth.v3.Authorization/Check"
_PB: Any = None


def _pb() -> Any:
    """The Envoy protos (``xds-protos``), imported the first time a gRPC check is made:
    they take a while to load, and a worker without gRPC ext auth never needs them."""
    global _PB
    if _PB is None:
        from envoy.service.auth.v3 import external_auth_pb2
        _PB = external_auth_pb2
    return _PB


def _address(pb_addr: Any, hostport: bytes) -> None:
    host, sep, port = hostport.decode("latin-1").rpartition(":")
    if not sep or not port.isdigit():
        host, port = hostport.decode("latin-1"), "0"
    sa = pb_addr.socket_address
    sa.address = host.strip("[]")
    sa.port_value = int(port)


def grpc_check(s: Settings, r: Request) -> bytes:
    """The ``CheckRequest`` as one length-prefixed gRPC message."""
    pb = _pb()
    req = pb.CheckRequest()
    _address(req.attributes.source.address, r.peer)
    http = req.attributes.request.http
    http.id = r.request_id.decode("latin-1")
    http.method = r.method.decode("latin-1")
    path = r.target
    http.path = path.decode("latin-1")
    q = path.find(b"?")
    if q >= 0:
        http.query = path[q + 1:].decode("latin-1")
    http.host = r.authority.decode("latin-1")
    http.scheme = r.scheme.decode("latin-1")
    http.protocol = "HTTP/2" if r.version == b"2" else "HTTP/" + r.version.decode("latin-1")
    http.size = r.size if r.size is not None else -1
    heads = http.headers
    allowed = s.allowed
    heads[":authority"] = http.host
    heads[":method"] = http.method
    heads[":path"] = http.path
    for n, v in r.headers:
        if allowed and n not in allowed:
            continue
        name = n.decode("latin-1")
        value = v.decode("latin-1")
        heads[name] = heads[name] + "," + value if name in heads else value
    if r.body:
        http.raw_body = r.body
    data = req.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


def grpc_decision(s: Settings, status: int, headers: tuple[tuple[bytes, bytes], ...],
                  body: bytes, trailers: tuple[tuple[bytes, bytes], ...]) -> Decision:
    """The ``CheckResponse`` of a call's answer; AuthError when there is none (an HTTP
    error, a gRPC error status, not exactly one well-formed message)."""
    if status != 200:
        raise AuthError("HTTP %d from the gRPC service" % status)
    grpc_status = None
    for n, v in trailers or headers:
        if n == b"grpc-status":
            grpc_status = v
    if grpc_status != b"0":
        message = next((v for n, v in (trailers or headers) if n == b"grpc-message"), b"")
        raise AuthError("gRPC status %s %s" % (
            (grpc_status or b"missing").decode("latin-1"), message.decode("latin-1")))
    if len(body) < 5 or body[0] != 0:
        raise AuthError("no (or a compressed) CheckResponse message")
    (n,) = struct.unpack_from(">I", body, 1)
    if len(body) != 5 + n:
        raise AuthError("CheckResponse framing: %d bytes announced, %d sent" % (n, len(body) - 5))
    pb = _pb()
    resp = pb.CheckResponse()
    try:
        resp.ParseFromString(body[5:])
    except Exception as exc:  # protobuf's DecodeError (its module path varies)
        raise AuthError("malformed CheckResponse: %s" % exc) from None
    if resp.status.code == 0:
        ok = resp.ok_response
        put: list[tuple[bytes, bytes]] = []
        add: list[tuple[bytes, bytes]] = []
        for opt in ok.headers:
            h = (opt.header.key.lower().encode("latin-1"), opt.header.value.encode("latin-1"))
            if h[0] in _FRAMING or not h[0]:
                continue
            append = opt.append.value if opt.HasField("append") else False
            (add if append else put).append(h)
        remove = tuple(n.lower().encode("latin-1") for n in ok.headers_to_remove
                       if n.lower().encode("latin-1") not in _FRAMING)
        return Decision(True, set=tuple(put), add=tuple(add), remove=remove)
    denied = resp.denied_response
    code = denied.status.code if denied.HasField("status") else 0
    out = tuple((opt.header.key.lower().encode("latin-1"), opt.header.value.encode("latin-1"))
                for opt in denied.headers)
    return Decision(False, code if 200 <= code <= 599 else 403,
                    tuple(h for h in out if h[0] not in _FRAMING and h[0]),
                    denied.body.encode("utf-8"),
                    reason="ext auth denied (gRPC status %d%s)" % (
                        resp.status.code, ": " + resp.status.message
                        if resp.status.message else ""))
