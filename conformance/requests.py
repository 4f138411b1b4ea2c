"""Replaying request cases with upstream's rules (conformance/utils/http, roundtripper).

- A new TCP connection per request (upstream disables keep-alives), 10 s per request.
- Every HTTP request carries ``X-Echo-Set-Header`` (empty when the case sets none).
- The body is parsed as the echo's JSON only when Content-Type is exactly
  ``application/json``; otherwise the captured request is empty but for the method
  (upstream: "assume it made the right request if the service isn't echoing").
- A case passes after 3 consecutive matching responses, probing every 100 ms, giving up
  after 30 s.
- Comparison (``compare``): status code among the expected ones (408 and 504 are
  interchangeable, and then nothing else is compared); for 200/204 the echoed path
  (byte for byte, with the query), method, namespace, host (only when given), headers
  (values joined with ","), absent headers, response headers, and the pod-name prefix;
  for 3xx with a redirect expectation the Location's scheme, host, port and path.

HTTPS uses the suite's certificate as the only trust anchor and checks the server name
the way Go's crypto/x509 does (``go_match_hostname``), as upstream's client is Go. As in
Go, a trusted certificate is an anchor even when it is a CA-issued leaf (OpenSSL's
partial-chain flag), which is how upstream trusts e.g. ``tls-checks-certificate``.

TCP probes (``tcp_probe``, ``tcp_echo_pod``, ``tls_rejection_probe``) follow
conformance/utils/tcp and utils/tls: the echo's welcome line, PING, IS_TLS and TEST on a
new connection per attempt; a TLS passthrough rejection is EOF or a reset during the
handshake, never an alert or a refused dial.
"""

from __future__ import annotations

import gzip
import http.client
import json
import re
import socket
import ssl
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

REQUEST_TIMEOUT_S = 10.0
CONSECUTIVE_SUCCESSES = 3
PROBE_INTERVAL_S = 0.1
MAX_TIME_TO_CONSISTENCY_S = 30.0

_GO_PATH_SAFE = "/:@!$&'()*+,;=-._~"


class RequestError(Exception):
    """The round trip itself failed (connect, TLS, protocol, timeout)."""


@dataclass(frozen=True)
class Request:
    method: str
    scheme: str  # http | https
    address: str  # host:port to dial
    path: str  # with the query, as the case gives it
    host: str = ""  # Host header (default: the address without the scheme's default port)
    headers: tuple[tuple[str, str], ...] = ()
    protocol: str = ""  # "" (HTTP/1.1), H2, H2C_PRIOR_KNOWLEDGE
    server_name: str = ""  # TLS SNI and name to verify
    ca_pem: bytes = b""
    client_cert: tuple[bytes, bytes] | None = None  # (cert PEM, key PEM)
    unfollow_redirect: bool = False
    #: Called when the server asks for a client certificate during the handshake (Go's
    #: GetClientCertificate hook, which upstream's TLS helpers use to assert the ask).
    on_certificate_request: Callable[[], None] | None = field(default=None, compare=False,
                                                              repr=False)

    @property
    def authority(self) -> str:
        """Upstream CalculateHost: the gateway address without the scheme's default port."""
        host, _, port = self.address.rpartition(":")
        if (self.scheme == "http" and port == "80") or (self.scheme == "https" and port == "443"):
            return host
        return self.address

    @property
    def request_uri(self) -> str:
        path, sep, query = self.path.partition("?")
        return urllib.parse.quote(path, safe=_GO_PATH_SAFE) + (sep + query if sep else "")


@dataclass
class CapturedRequest:
    path: str = ""
    host: str = ""
    method: str = ""
    protocol: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    namespace: str = ""
    pod: str = ""
    sni: str = ""  # the server name the backend saw (backend TLS)
    #: PEM certificates the client presented to the backend (echo ``tls.peerCertificates``)
    peer_certificates: list[str] = field(default_factory=list)


@dataclass
class Redirect:
    scheme: str
    host: str
    port: str
    path: str


@dataclass
class CapturedResponse:
    status: int
    headers: dict[str, list[str]]  # lower-cased names
    body: bytes = b""
    redirect: Redirect | None = None
    protocol: str = "HTTP/1.1"


def canonical_header(name: str) -> str:
    """Go's textproto.CanonicalMIMEHeaderKey (what upstream's client sends)."""
    if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+", name):
        return name
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def echo_set_header(pairs: dict[str, str] | None) -> str:
    return ",".join(f"{k}:{v}" for k, v in (pairs or {}).items())


# -- TLS ------------------------------------------------------------------------


def go_match_hostname(pattern: str, host: str) -> bool:
    """crypto/x509 matchHostnames: label-wise, '*' only as the whole leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern or not host:
        return False
    p_labels, h_labels = pattern.split("."), host.split(".")
    if len(p_labels) != len(h_labels):
        return False
    for i, (p, h) in enumerate(zip(p_labels, h_labels)):
        if i == 0 and p == "*":
            continue
        if p != h:
            return False
    return True


def _tls_context(req: Request, alpn: list[str] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # verified below with Go's rules
    ctx.verify_mode = ssl.CERT_REQUIRED
    if req.ca_pem:
        ctx.load_verify_locations(cadata=req.ca_pem.decode())
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # Go: every pool certificate is an anchor
    if req.client_cert:
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
            f.write(req.client_cert[0] + b"\n" + req.client_cert[1])
            f.flush()
            ctx.load_cert_chain(f.name)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if req.on_certificate_request is not None:
        watch_certificate_request(ctx, req.on_certificate_request)
    return ctx


def watch_certificate_request(ctx: ssl.SSLContext, hook: Callable[[], None]) -> None:
    """Call ``hook`` when the server sends a CertificateRequest (TLS 1.2 and 1.3 alike).

    Go's client has a GetClientCertificate hook that runs exactly then; Python's ssl has
    none, so the handshake messages are watched through the context's message callback
    (``_msg_callback``, the CPython hook behind OpenSSL's SSL_CTX_set_msg_callback; it
    sees TLS 1.3's encrypted handshake messages in the clear)."""
    if not hasattr(ctx, "_msg_callback"):
        raise RuntimeError("this Python's ssl module has no message callback: cannot tell whether "
                           "the server asked for a client certificate")
    handshake = ssl._TLSContentType.HANDSHAKE  # type: ignore[attr-defined]
    request = ssl._TLSMessageType.CERTIFICATE_REQUEST  # type: ignore[attr-defined]

    def on_message(_conn: Any, direction: str, _version: Any, content_type: Any, msg_type: Any,
                   _data: bytes) -> None:
        if direction == "read" and content_type == handshake and msg_type == request:
            hook()

    ctx._msg_callback = on_message


def _verify_name(sock: ssl.SSLSocket, name: str) -> None:
    cert = sock.getpeercert() or {}
    alt_names: Any = cert.get("subjectAltName", ())
    sans = [v for k, v in alt_names if k in ("DNS", "IP Address")]
    if not any(go_match_hostname(s, name) or s == name for s in sans):
        raise RequestError(f"x509: certificate is valid for {sans}, not {name}")


def _dial(req: Request, alpn: list[str] | None = None) -> socket.socket:
    host, _, port = req.address.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=REQUEST_TIMEOUT_S)
    except OSError as exc:
        raise RequestError(f"dial {req.address}: {exc}") from exc
    if req.scheme != "https":
        return sock
    name = req.server_name or req.host.rsplit(":", 1)[0] or host
    try:
        tls = _tls_context(req, alpn).wrap_socket(sock, server_hostname=name)
        _verify_name(tls, name)
        return tls
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise RequestError(f"tls handshake with {req.address} (sni {name}): {exc}") from exc


# -- HTTP/1.1 and HTTP/2 round trips ----------------------------------------------


def round_trip(req: Request) -> tuple[CapturedRequest, CapturedResponse]:
    if req.protocol in ("H2", "H2C_PRIOR_KNOWLEDGE"):
        res = _round_trip_h2(req)
    else:
        res = _round_trip_h1(req)
    return capture_request(req, res), res


def _request_headers(req: Request) -> list[tuple[str, str]]:
    """The case's headers as Go's client sends them: canonical names, its User-Agent, and
    ``Accept-Encoding: gzip`` (which Go adds, and then undoes, transparently)."""
    hdrs = [(canonical_header(k), v) for k, v in req.headers]
    if not any(k.lower() == "user-agent" for k, _ in hdrs):
        hdrs.append(("User-Agent", "Go-http-client/1.1"))
    if req.method != "HEAD" and not any(k.lower() in ("accept-encoding", "range") for k, _ in hdrs):
        hdrs.append(("Accept-Encoding", "gzip"))
    return hdrs


def _transparent_gzip(req: Request, res: CapturedResponse) -> CapturedResponse:
    """Go's transport decompresses a gzip body it asked for and drops the headers that
    described the compressed form."""
    asked = not any(k.lower() in ("accept-encoding", "range")
                    for k, _ in req.headers) and req.method != "HEAD"
    if asked and [v.lower() for v in res.headers.get("content-encoding", [])] == ["gzip"]:
        try:
            res.body = gzip.decompress(res.body)
        except (OSError, EOFError) as exc:
            raise RequestError(f"gzip body: {exc}") from exc
        res.headers.pop("content-encoding", None)
        res.headers.pop("content-length", None)
    return res


def _round_trip_h1(req: Request) -> CapturedResponse:
    sock = _dial(req)
    conn = http.client.HTTPConnection(req.address.rpartition(":")[0].strip("[]"),
                                      timeout=REQUEST_TIMEOUT_S)
    conn.sock = sock
    try:
        conn.putrequest(req.method, req.request_uri, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", req.host or req.authority)
        for k, v in _request_headers(req):
            conn.putheader(k, v)
        conn.putheader("Connection", "close")
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        headers: dict[str, list[str]] = {}
        for k, v in resp.getheaders():
            headers.setdefault(k.lower(), []).append(v)
        out = CapturedResponse(resp.status, headers, body, protocol="HTTP/1.1")
    except (http.client.HTTPException, OSError) as exc:
        raise RequestError(
            f"{req.method} {req.scheme}://{req.address}{req.request_uri}: {exc!r}") from exc
    finally:
        conn.close()
    return _with_redirect(req, _transparent_gzip(req, out))


def _round_trip_h2(req: Request) -> CapturedResponse:
    import h2.config
    import h2.connection
    import h2.events

    sock = _dial(req, alpn=["h2"] if req.scheme == "https" else None)
    if isinstance(sock, ssl.SSLSocket) and sock.selected_alpn_protocol() != "h2":
        sock.close()
        raise RequestError(f"server did not negotiate h2 (ALPN {sock.selected_alpn_protocol()!r})")
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    try:
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        hdrs = [(":method", req.method), (":scheme", req.scheme),
                (":authority", req.host or req.authority),
                (":path", req.request_uri)] + [(k.lower(), v) for k, v in _request_headers(req)]
        conn.send_headers(sid, hdrs, end_stream=True)
        sock.sendall(conn.data_to_send())
        status, body, done = 0, bytearray(), False
        headers: dict[str, list[str]] = {}
        while not done:
            data = sock.recv(65536)
            if not data:
                raise RequestError("connection closed before the response completed")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    # header_encoding="utf-8": names and values are str
                    for k, v in cast("list[tuple[str, str]]", ev.headers):
                        if k == ":status":
                            status = int(v)
                        else:
                            headers.setdefault(k.lower(), []).append(v)
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    done = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise RequestError(f"stream reset: error code {ev.error_code}")
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise RequestError(f"GOAWAY: error code {ev.error_code}")
            sock.sendall(conn.data_to_send())
        out = _transparent_gzip(req,
                                CapturedResponse(status, headers, bytes(body), protocol="HTTP/2.0"))
    except (OSError, ValueError) as exc:
        raise RequestError(f"h2 {req.method} {req.address}{req.request_uri}: {exc!r}") from exc
    except Exception as exc:  # h2 protocol errors have no common base worth naming here
        if exc.__class__.__module__.startswith("h2"):
            raise RequestError(f"h2 protocol error: {exc!r}") from exc
        raise
    finally:
        sock.close()
    return _with_redirect(req, out)


def is_redirect(code: int) -> bool:
    return code in (300, 301, 302, 303, 304, 305, 307, 308)


def _with_redirect(req: Request, res: CapturedResponse) -> CapturedResponse:
    if not is_redirect(res.status):
        return res
    location = (res.headers.get("location") or [""])[0]
    if not location:
        # upstream's roundtripper calls resp.Location() for every redirect status: an error
        raise RequestError(f"{res.status} response without a Location header")
    res.redirect = parse_location(f"{req.scheme}://{req.host or req.authority}{req.request_uri}",
                                  location)
    if not req.unfollow_redirect and res.status in (301, 302, 303, 307, 308):
        # Go's client would follow it, dialling the Location's host: outside loopback.
        raise RequestError(f"unexpected {res.status} redirect to {location}")
    return res


def parse_location(request_url: str, location: str) -> Redirect:
    """Go's resp.Location(): resolved against the request URL; Hostname() and Port()
    split without changing case; Path decoded."""
    url = urllib.parse.urljoin(request_url, location)
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if netloc.startswith("["):
        host, _, rest = netloc[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = netloc.partition(":")
    return Redirect(parts.scheme, host, port, urllib.parse.unquote(parts.path))


def capture_request(req: Request, res: CapturedResponse) -> CapturedRequest:
    ctype = (res.headers.get("content-type") or [""])[0]
    if ctype != "application/json":
        return CapturedRequest(method=req.method)
    try:
        doc = json.loads(res.body)
    except ValueError as exc:
        raise RequestError(f"unexpected error reading response: {exc}") from exc
    if not isinstance(doc, dict):
        raise RequestError("echo response is not a JSON object")
    headers = doc.get("headers") or {}
    return CapturedRequest(
        path=str(doc.get("path", "")), host=str(doc.get("host", "")),
        method=str(doc.get("method", "")), protocol=str(doc.get("proto", "")),
        headers={str(k): [str(x) for x in (v if isinstance(v, list) else [v])]
                 for k, v in headers.items()},
        namespace=str(doc.get("namespace", "")), pod=str(doc.get("pod", "")),
        sni=str(doc.get("sni") or (doc.get("tls") or {}).get("serverName") or ""),
        peer_certificates=[str(c) for c in ((doc.get("tls") or {}).get("peerCertificates") or [])])


# -- expectations ----------------------------------------------------------------


def is_timeout_code(code: int) -> bool:
    return code in (408, 504)


def _join(values: list[str]) -> str:
    return ",".join(values)


def compare(req: Request, creq: CapturedRequest, cres: CapturedResponse, expect: dict[str, Any],
            sent: dict[str, Any] | None = None) -> str | None:
    """One probe against one case's ``expect`` (as recorded in cases/*.json); ``None``
    when it matches. ``sent`` is the case's request as sent (placeholders filled): with
    no recorded backendRequest, the backend must have seen exactly that (upstream)."""
    codes = [int(c) for c in expect.get("statusCodes") or [200]]
    if is_timeout_code(cres.status) and any(is_timeout_code(c) for c in codes):
        return None
    if cres.status not in codes:
        return f"expected status code {codes if len(codes) > 1 else codes[0]}, got {cres.status}"
    if cres.status in (200, 204):
        sent = sent or {}
        er = expect.get("backendRequest")
        if er is None:
            er = {"path": sent.get("path", req.path), "method": sent.get("method") or req.method,
                  "headers": dict(sent.get("headers") or {}), "_source": "defaults to Request"}
        defaults_to_request = str(er.get("_source", "")).startswith("defaults to Request")
        # upstream: ExpectedRequest = &ExpectedRequest{Request: expected.Request}, so the
        # sent Host (and SNI and client certificate) are expected at the backend
        host = str(sent.get("host") or "") if defaults_to_request else str(er.get("host") or "")
        method = er.get("method") or "GET"
        if host and host != creq.host:
            return f"expected host to be {host}, got {creq.host}"
        if er.get("path", "") != creq.path:
            return f"expected path to be {er.get('path', '')}, got {creq.path}"
        if method != creq.method:
            return f"expected method to be {method}, got {creq.method}"
        if expect.get("backendNamespace", "") != creq.namespace:
            return (
                f"expected namespace to be {expect.get('backendNamespace', '')}, got "
                f"{creq.namespace}")
        lower_req = {k.lower(): v for k, v in creq.headers.items()}
        if er.get("headers"):
            if not creq.headers:
                return f"no headers captured, expected {len(er['headers'])}"
            for name, want in er["headers"].items():
                got = lower_req.get(name.lower())
                if got is None:
                    return f"expected {name} header to be set, actual headers: {creq.headers}"
                if _join(got) != want:
                    return f"expected {name} header to be set to {want}, got {_join(got)}"
        why = _response_headers(cres, expect)
        if why:
            return why
        for name in er.get("absentHeaders") or []:
            if name.lower() in lower_req:
                return f"expected {name} header to not be set, got {lower_req[name.lower()]}"
        prefix = expect.get("backendPodPrefix", "") or ""
        if not creq.pod.startswith(prefix):
            return f"expected pod name to start with {prefix}, got {creq.pod}"
        want_sni = backend_sni(er, sent)
        if want_sni and creq.sni != want_sni:
            return f"expected the backend to see SNI {want_sni}, got {creq.sni or 'none'}"
        want_cert = sent.get("clientCert") if defaults_to_request else er.get("clientCert")
        if want_cert:
            if not isinstance(want_cert, str):
                raise ValueError(
                    f"client certificate to expect is not resolved to PEM: {want_cert!r}")
            if want_cert not in creq.peer_certificates:
                return (f"expected client certificate was not captured (the backend saw "
                        f"{len(creq.peer_certificates)} peer certificate(s))")
    elif is_redirect(cres.status) and expect.get("redirect"):
        return _compare_redirect(req, cres, expect["redirect"])
    return None


def backend_sni(er: dict[str, Any], sent: dict[str, Any]) -> str:
    """The server name the backend must have seen (backend TLS): the expected request's
    own, or, where the expected request defaults to the request sent (the data marks
    that in ``_source``), the request's ``sni``."""
    if er.get("tlsServerName"):
        return str(er["tlsServerName"])
    if str(er.get("_source", "")).startswith("defaults to Request"):
        return str(sent.get("sni") or "")
    return ""


def _response_headers(cres: CapturedResponse, expect: dict[str, Any]) -> str | None:
    # upstream's IgnoreWhitespace removes spaces (only) from both sides, for the
    # single-value and the one-of expectations alike
    squash = (lambda s: s.replace(" ", "")) if expect.get("ignoreWhitespaceInHeaderValues") else (
        lambda s: s)
    for name, want in (expect.get("responseHeaders") or {}).items():
        got = cres.headers.get(name.lower())
        if got is None:
            return f"expected response header {name} to be set, actual headers: {cres.headers}"
        if squash(_join(got)) != squash(want):
            return f"expected response header {name} to be set to {want}, got {_join(got)}"
    for name, allowed in (expect.get("responseHeaderOneOf") or {}).items():
        got = cres.headers.get(name.lower())
        if got is None:
            return f"expected response header {name} to be set, actual headers: {cres.headers}"
        if squash(_join(got)) not in {squash(a) for a in allowed}:
            return f"expected response header {name} to be one of {allowed}, got {_join(got)}"
    for name in expect.get("responseAbsentHeaders") or []:
        if name.lower() in cres.headers:
            return (
                f"expected response header {name} to not be set, got {cres.headers[name.lower()]}")
    return None


def _compare_redirect(req: Request, cres: CapturedResponse, want: dict[str, Any]) -> str | None:
    got = cres.redirect
    if got is None:
        return f"{cres.status} response without a usable Location"
    host = want.get("host") or got.host
    scheme = want.get("scheme") or req.scheme
    path = want.get("path") or req.path.partition("?")[0]
    if host != got.host:
        return f"expected redirected hostname to be {host!r}, got {got.host!r}"
    port = str(want.get("port") or "")
    if not port:
        if got.scheme.lower() == "http" and got.port not in ("80", ""):
            return (
                f"for http scheme, expected redirected port to be 80 or not set, got {got.port!r}")
        if got.scheme.lower() == "https" and got.port not in ("443", ""):
            return ("for https scheme, expected redirected port to be 443 or not set, "
                    f"got {got.port!r}")
    elif port != got.port:
        return f"expected redirected port to be {port!r}, got {got.port!r}"
    if scheme != got.scheme:
        return f"expected redirected scheme to be {scheme!r}, got {got.scheme!r}"
    if path != got.path:
        return f"expected redirected path to be {path!r}, got {got.path!r}"
    return None


# -- eventual consistency -------------------------------------------------------


class NotConsistent(Exception):
    """A case did not pass CONSECUTIVE_SUCCESSES times in a row within its time limit."""


class WrongAnswer(Exception):
    """An answer upstream fails the test on at once, without retrying: a 200 where the
    request must fail (WaitForConsistentFailureResponse), a TCP echo exchange that
    completed with the wrong content (WaitForValidTCPResponse's assertions). A probe
    raises it; ``wait_consistent`` lets it through."""


def wait_consistent(probe: Callable[[], str | None], *, threshold: int = CONSECUTIVE_SUCCESSES,
                    interval: float = PROBE_INTERVAL_S, limit: float = MAX_TIME_TO_CONSISTENCY_S,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> int:
    """Run ``probe`` (None = pass, else the reason) until it passes ``threshold`` times in
    a row; no delay after a pass, ``interval`` after a failure. Returns the attempts made."""
    start = clock()
    successes = attempts = 0
    last = "no attempt made"
    while True:
        if clock() - start > limit:
            raise NotConsistent(f"timeout after {attempts} attempts ({successes}/{threshold} "
                                f"successes); last: {last}")
        why = probe()
        attempts += 1
        if why is None:
            successes += 1
            if successes >= threshold:
                return attempts
            continue
        successes = 0
        last = why
        sleep(interval)


# -- TCP echo exchanges (conformance/utils/tcp, conformance/utils/tls) ---------------

TCP_WELCOME = "Gateway API Test TCP Server\n"
TCP_SEND_ONCE_TIMEOUT_S = 5.0  # upstream EchoSendOnce's probe timeout


@dataclass(frozen=True)
class TcpTarget:
    """Where a TCP probe goes; with ``use_tls`` the client does TLS first (SNI
    ``server_name``, trusting ``ca_pem`` only, or the system roots when empty)."""

    address: str
    use_tls: bool = False
    server_name: str = ""
    ca_pem: bytes = b""


@dataclass(frozen=True)
class TcpExpectation:
    """Upstream tcp.ExpectedResponse."""

    backend: str
    namespace: str
    backend_is_tls: bool = False
    hostname: str = ""  # the SNI the backend must have seen
    tls_protocol: str = ""  # the ALPN protocol the backend must have negotiated


def _tcp_dial(target: TcpTarget, timeout: float) -> socket.socket:
    host, _, port = target.address.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as exc:
        raise RequestError(f"dial {target.address}: {exc}") from exc
    if not target.use_tls:
        return sock
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # Go's name rules, below
    if target.ca_pem:
        ctx.load_verify_locations(cadata=target.ca_pem.decode())
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # Go: every pool certificate is an anchor
    else:
        ctx.load_default_certs()
    try:
        tls = ctx.wrap_socket(sock, server_hostname=target.server_name or None)
        if target.server_name:
            _verify_name(tls, target.server_name)
        return tls
    except (ssl.SSLError, OSError) as exc:
        sock.close()
        raise RequestError(
            f"tls handshake with {target.address} (sni {target.server_name}): {exc}") from exc


class _LineReader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def line(self) -> str:
        """One line with its newline (Go's ReadString('\\n')); a close before it is an error."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RequestError(f"EOF after {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode("utf-8", "replace") + "\n"


def tcp_probe(target: TcpTarget, expected: TcpExpectation,
              timeout: float = REQUEST_TIMEOUT_S) -> str | None:
    """One attempt of upstream WaitForValidTCPResponse on a new connection: the welcome
    line, PING -> PONG, IS_TLS -> the expected flag, TEST -> JSON matching ``expected``.
    ``None`` when it all matches; the reason when the exchange did not complete (dial,
    read or JSON errors: upstream retries those). A wrong answer raises WrongAnswer, even
    when a later read fails: upstream's assertions fail the test on the first one."""
    try:
        sock = _tcp_dial(target, timeout)
    except RequestError as exc:
        return f"client could not connect: {exc}"
    wrong: list[str] = []
    try:
        reader = _LineReader(sock)
        msg = reader.line()
        if msg != TCP_WELCOME:
            wrong.append(f"TCP server welcome message does not match: got {msg!r}")
        sock.sendall(b"PING\n")
        msg = reader.line()
        if msg != "PONG\n":
            wrong.append(f"TCP server PING response does not match: got {msg!r}")
        sock.sendall(b"IS_TLS\n")
        msg = reader.line().removesuffix("\n")
        if msg != ("true" if expected.backend_is_tls else "false"):
            wrong.append(f"TCP server TLS response does not match: got {msg!r}")
        sock.sendall(b"TEST\n")
        payload = json.loads(reader.line())
    except (RequestError, OSError, ValueError) as exc:
        # upstream's assertion already failed the test; the read error only ends the attempt
        if wrong:
            raise WrongAnswer("; ".join(wrong)) from exc
        return f"an error occurred during assertion: {exc}"
    finally:
        sock.close()
    why = validate_tcp_payload(payload, expected)
    if why:
        wrong.append(why)
    if wrong:
        raise WrongAnswer("; ".join(wrong))
    return None


def validate_tcp_payload(payload: Any, expected: TcpExpectation) -> str | None:
    """Upstream validateTestMessage."""
    if not isinstance(payload, dict):
        return f"TCP response payload is not an object: {payload!r}"
    ns, pod = str(payload.get("namespace", "")), str(payload.get("pod", ""))
    if ns != expected.namespace:
        return f"namespace does not match: got {ns!r}, want {expected.namespace!r}"
    if not pod.startswith(f"{expected.backend}-"):
        return (f"backend name does not match with pod prefix: pod={pod!r} "
                f"backend={expected.backend!r}")
    tls = payload.get("tls")
    if expected.hostname:
        if not isinstance(tls, dict):
            return (
                "TLS server name does not match: no TLS assertions received, want "
                f"{expected.hostname!r}")
        if tls.get("serverName", "") != expected.hostname:
            return (
                f"TLS server name does not match: got {tls.get('serverName', '')!r}, want "
                f"{expected.hostname!r}")
    if expected.tls_protocol:
        if not isinstance(tls, dict):
            return (
                "TLS protocol does not match: no TLS assertions received, want "
                f"{expected.tls_protocol!r}")
        if tls.get("negotiatedProtocol", "") != expected.tls_protocol:
            return (f"TLS protocol does not match: got {tls.get('negotiatedProtocol', '')!r}, "
                    f"want {expected.tls_protocol!r}")
    return None


def tcp_echo_pod(address: str, timeout: float = TCP_SEND_ONCE_TIMEOUT_S) -> str:
    """Upstream tcp.EchoSendOnce: one connection, the welcome line, TEST; the pod that
    answered. Raises RequestError when any step fails."""
    sock = _tcp_dial(TcpTarget(address), timeout)
    try:
        reader = _LineReader(sock)
        welcome = reader.line()
        if welcome != TCP_WELCOME:
            raise RequestError(f"unexpected TCP welcome message: {welcome!r}")
        sock.sendall(b"TEST\n")
        line = reader.line()
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise RequestError(f"decoding TCP echo response {line!r}: {exc}") from exc
    except OSError as exc:
        raise RequestError(f"TCP echo exchange with {address}: {exc}") from exc
    finally:
        sock.close()
    pod = doc.get("pod") if isinstance(doc, dict) else None
    if not pod:
        raise RequestError(f"TCP echo response missing pod name: {line!r}")
    return str(pod)


def tcp_connect_probe(address: str, timeout: float = REQUEST_TIMEOUT_S) -> str | None:
    """Upstream tcp.ExpectAddressBeAvailable's attempt: a TCP connection opens."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return f"failed to establish TCP connection to {address}: {exc}"


def tcp_echo_probe(address: str, timeout: float = REQUEST_TIMEOUT_S) -> str | None:
    """Upstream tcp.ExpectEchoResponse's attempt: one EchoSendOnce exchange completes."""
    try:
        tcp_echo_pod(address, timeout)
        return None
    except RequestError as exc:
        return f"failed to receive a TCP echo response from {address}: {exc}"


def tls_rejection_probe(address: str, server_name: str,
                        timeout: float = REQUEST_TIMEOUT_S) -> str | None:
    """One attempt of upstream MakeTLSConnectionAndExpectEventuallyConnectionRejection:
    dial and start a TLS handshake with ``server_name``; ``None`` when the connection is
    rejected (EOF or a reset during the handshake), else why not (a completed handshake,
    a TLS alert or a refused dial are not rejections)."""
    host, _, port = address.rpartition(":")
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except ConnectionResetError:
        return None
    except OSError as exc:
        return f"client could not connect: {exc}"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_default_certs()
    try:
        tls = ctx.wrap_socket(sock, server_hostname=server_name or None)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError):
        return None
    except ssl.SSLError as exc:
        if "EOF" in str(exc) or "connection reset" in str(exc).lower():
            return None
        return f"client could not connect: {exc}"
    except OSError as exc:
        return f"client could not connect: {exc}"
    finally:
        sock.close()
    tls.close()
    return "client could connect (TLS handshake completed)"


# -- UDP echo exchanges (conformance/utils/udp, as the case records name them) -------

UDP_SEND_ONCE_TIMEOUT_S = 5.0
UDP_MAX_DATAGRAM = 65535


def udp_exchange(address: str, timeout: float = UDP_SEND_ONCE_TIMEOUT_S) -> dict[str, Any]:
    """One datagram to ``address`` ("host:port") on a new socket, carrying a fresh
    message, and the echo's JSON answer (echo-basic's udpechoserver envelope: the pod
    context and ``request``, the datagram it received). Raises RequestError on no
    answer, a non-JSON answer or someone else's answer (the message must come back)."""
    host, _, port = address.rpartition(":")
    message = f"kgw-conformance {uuid.uuid4()}"
    try:
        port_n = int(port)
    except ValueError:
        raise RequestError(f"bad UDP address {address!r}") from None
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host.strip("[]"), port_n))  # replies from elsewhere are filtered
            sock.send(message.encode())
            data = sock.recv(UDP_MAX_DATAGRAM)
        except TimeoutError:
            raise RequestError(f"no UDP answer from {address} within {timeout:g}s") from None
        except OSError as exc:
            raise RequestError(f"UDP exchange with {address}: {exc}") from exc
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RequestError(f"decoding UDP echo response {data[:200]!r}: {exc}") from exc
    if not isinstance(doc, dict):
        raise RequestError(f"UDP echo response is not an object: {data[:200]!r}")
    if doc.get("request") != message:
        raise RequestError(
            f"UDP echo answered another datagram: {doc.get('request')!r}, sent {message!r}")
    return doc


def validate_udp_payload(doc: dict[str, Any], service: str, namespace: str) -> str | None:
    """Upstream udp.ExpectEchoResponseFromBackend: the envelope's ``service`` (the
    echo's SERVICE_NAME) and ``namespace`` equal the expected ones, when given."""
    got_service, ns = str(doc.get("service", "")), str(doc.get("namespace", ""))
    if service and got_service != service:
        return (
            f"UDP echo response service={got_service!r} did not match expected {service!r} "
            f"(pod={doc.get('pod')!r})")
    if namespace and ns != namespace:
        return (
            f"UDP echo response namespace={ns!r} did not match expected {namespace!r} "
            f"(pod={doc.get('pod')!r})")
    return None


def udp_probe(address: str, service: str = "", namespace: str = "",
              timeout: float = UDP_SEND_ONCE_TIMEOUT_S) -> str | None:
    """One attempt: ``None`` when an echo answers (from ``service`` in ``namespace`` when
    given), else why not."""
    try:
        doc = udp_exchange(address, timeout)
    except RequestError as exc:
        return str(exc)
    return validate_udp_payload(doc, service, namespace)


def udp_echo_pod(address: str, timeout: float = UDP_SEND_ONCE_TIMEOUT_S) -> str:
    """One exchange on a new socket (a new flow); the pod that answered."""
    doc = udp_exchange(address, timeout)
    pod = doc.get("pod")
    if not pod:
        raise RequestError(f"UDP echo response missing pod name: {doc!r}")
    return str(pod)


# -- DNS through a UDP route (upstream UDPRoute: dns.Exchange to CoreDNS) -------------

DNS_EXCHANGE_TIMEOUT_S = 2.0  # miekg/dns Exchange's default read timeout


def dns_whoami_probe(address: str, qname: str = "foo.bar.com.",
                     timeout: float = DNS_EXCHANGE_TIMEOUT_S) -> str | None:
    """One A query for ``qname`` to ``address`` on a new socket, as upstream's
    ``dns.Exchange`` (which accepts any reply that parses and matches the query). The
    reply must also be what CoreDNS's whoami plugin, which serves that zone in the
    suite's Corefile, answers: NOERROR, authoritative, an empty answer section, and the
    client's address (A/AAAA for ``qname``) and port (SRV ``_udp.<qname>``) in the
    additional section. ``None`` when so, else why not."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.name
    import dns.query
    import dns.rcode
    import dns.rdatatype

    host, _, port = address.rpartition(":")
    query = dns.message.make_query(qname, "A")
    try:
        reply = dns.query.udp(query, host.strip("[]"), port=int(port), timeout=timeout)
    except (dns.exception.DNSException, OSError, ValueError) as exc:
        return f"failed to perform a UDP query: {exc!r}"
    if reply.rcode() != dns.rcode.NOERROR:
        return f"DNS reply {dns.rcode.to_text(reply.rcode())}, want NOERROR (whoami)"
    if not reply.flags & dns.flags.AA or reply.answer:
        return f"DNS reply is not whoami's (authoritative, empty answer): {reply}"
    name = dns.name.from_text(qname)
    srv = dns.name.Name((b"_udp",) + name.labels)
    have_addr = any(r.name == name and r.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                    for r in reply.additional)
    have_srv = any(r.name == srv and r.rdtype == dns.rdatatype.SRV for r in reply.additional)
    if not (have_addr and have_srv):
        return f"DNS reply lacks whoami's address and _udp SRV records: {reply}"
    return None


# -- WebSocket (HTTPRouteBackendProtocolWebSocket) ---------------------------------------

WS_TEXT = "Websocket Support!"
WS_BINARY = bytes([1, 2, 3, 4, 5, 6, 7])


def websocket_probe(address: str, origin: str, path: str = "/ws",
                    timeout: float = REQUEST_TIMEOUT_S) -> str | None:
    """Upstream's WebSocket exchange (golang.org/x/net/websocket, with websocket-client):
    dial ``ws://<address><path>`` with ``Origin``, the Host being the address as Go's
    dialer sends it; a text frame and a binary frame must each come back with the same
    payload (upstream's Message.Receive reads either frame type). None = passed."""
    import websocket  # websocket-client

    try:
        ws = websocket.create_connection(f"ws://{address}{path}", timeout=timeout, origin=origin,
                                         host=address)
    except (OSError, websocket.WebSocketException) as exc:
        return f"failed to dial: {exc!r}"
    try:
        for sent, send in ((WS_TEXT.encode(), lambda: ws.send(WS_TEXT)),
                           (WS_BINARY, lambda: ws.send_binary(WS_BINARY))):
            send()
            _opcode, reply = ws.recv_data()
            if reply != sent:
                return f"unexpected reply - want: {sent!r} got: {reply!r}"
        return None
    except (OSError, websocket.WebSocketException) as exc:
        return f"WebSocket exchange failed: {exc!r}"
    finally:
        ws.close()
