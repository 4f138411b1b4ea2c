"""TLS termination: certificates chosen by SNI, swappable without rebinding.

Each HTTPS listener's server socket is created once with a *dispatch* context whose
``sni_callback`` looks up the listener's current ``CertStore`` and switches the
connection to the matching certificate's context. A new config only replaces the store,
so a changed certificate is served from the next handshake on, with no restart.

Contexts are cached by (cert PEM, key PEM, client validation): an unchanged certificate
is never reloaded. A certificate that fails to load is logged and skipped; it never takes
a worker down.

Client certificate validation (mTLS, Gateway ``spec.tls.frontend``) is per port, so it
is set on the dispatch context *and* on every context the SNI callback may select.
Both are needed: OpenSSL fixes a connection's verify mode when the connection is
created (from the dispatch context; switching contexts in the SNI callback does not
change it), but verifies the client's chain against the trust store of the context the
callback switched to. A change of validation therefore needs a new dispatch context:
the worker rebinds the listener (``worker._same_socket``), which also discards the
session-ticket keys, so no ticket issued under the old settings can resume a session.

A handshake whose server name (or its absence) selects no certificate fails with the
``unrecognized_name`` alert, and the listener's ``on_refused`` hook counts and logs it;
its ``on_failed`` hook hears of every failed handshake (the access log, the counters).
asyncio and uvloop close the socket as soon as a server handshake fails, before sending
what OpenSSL wrote for the peer, so the alert would never leave: the dispatch context's
``_AlertingSSLObject`` holds the failure back for one turn, the event loop flushes the
alert as for any handshake step, and the failure is raised on the next one (the peer,
having the fatal alert, closes; the handshake timeout covers one that does not).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable

from kgw_l7 import tls_fallback
from kgw_l7.config import Certificate, ClientValidation, UpstreamTLS

log = logging.getLogger("kgw.l7.tls")

#: TLS 1.2 suites with forward secrecy and AEAD only (Mozilla "intermediate");
#: TLS 1.3 suites are OpenSSL's defaults, all modern.
CIPHERS_TLS12 = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                 "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                 "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
ALPN = ["http/1.1"]
#: What listeners offer: HTTP/2 first (kgw_l7.downstream_h2), then HTTP/1.1.
SERVER_ALPN = ["h2", "http/1.1"]


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """ssl only loads key material from files: write both to a private temp dir."""
    with tempfile.TemporaryDirectory(prefix="kgw-tls-") as d:
        cert_path = os.path.join(d, "tls.crt")
        key_path = os.path.join(d, "tls.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def apply_client_validation(ctx: ssl.SSLContext, validation: ClientValidation | None) -> None:
    """Make a server context ask for and check client certificates.

    ``AllowValidOnly``: CERT_REQUIRED against ``ca_pem`` -- no certificate, or one that
    does not chain to those CAs, fails the handshake.

    ``AllowInsecureFallback``: a certificate is asked for too, and checked against
    ``ca_pem`` by OpenSSL, but the handshake goes on whatever the check says and when
    none is given; a failed check is logged (kgw_l7.tls_fallback, which installs the
    verify callback the stdlib does not expose).
    Raises ssl.SSLError when ``ca_pem`` holds no usable certificate, or when the
    fallback mode cannot be set up in this Python.
    """
    if validation is None:
        return
    ctx.load_verify_locations(cadata=validation.ca_pem)
    if validation.mode == "AllowValidOnly":
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        tls_fallback.install(ctx)


def server_context(cert_pem: str | None = None, key_pem: str | None = None,
                   validation: ClientValidation | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS_TLS12)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(SERVER_ALPN)
    if cert_pem is not None and key_pem is not None:
        _load_chain(ctx, cert_pem, key_pem)
    apply_client_validation(ctx, validation)
    return ctx


class CertStore:
    """One listener's certificates, selected by server name: exact, then the longest
    wildcard, then ``*`` (and the first certificate when nothing else applies).

    Each Gateway listener's certificates are loaded into contexts of their own (the cache
    key holds the server names), even when two listeners serve the same certificate: the
    context a handshake's SNI chose then says which Gateway listener the connection
    belongs to, which ``misdirected`` compares with the request's Host."""

    def __init__(self, certs: tuple[Certificate, ...],
                 load: Callable[[Certificate], ssl.SSLContext | None]) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        wild: list[tuple[str, ssl.SSLContext]] = []
        self.default: ssl.SSLContext | None = None
        self.count = 0
        for cert in certs:
            ctx = load(cert)
            if ctx is None:
                continue
            self.count += 1
            for name in cert.server_names:
                name = name.lower()
                if name == "*":
                    self.default = self.default or ctx
                elif name.startswith("*."):
                    wild.append((name[1:], ctx))
                else:
                    self.exact.setdefault(name, ctx)
        wild.sort(key=lambda x: len(x[0]), reverse=True)
        self.wildcards = tuple(wild)

    def select(self, name: str | None) -> ssl.SSLContext | None:
        if name:
            name = name.lower().rstrip(".")
            ctx = self.exact.get(name)
            if ctx is not None:
                return ctx
            for suffix, ctx in self.wildcards:
                if name.endswith(suffix) and len(name) > len(suffix):
                    return ctx
        return self.default

    def misdirected(self, ssl_context: ssl.SSLContext | None, host: bytes) -> bool:
        """True when ``host`` selects another Gateway listener (or none) than the one the
        connection's SNI selected: a request sent on a connection made for another name
        (HTTP/2 connection coalescing, a client reusing a connection), answered 421 so
        that the client opens one for this name, whether or not the certificates are the
        same (GatewayHTTPSListenerDetectMisdirectedRequests). One listener on the port:
        nothing to confuse it with, the request is routed (404 when no route)."""
        if self.count < 2 or ssl_context is None:
            return False
        return self.select(host.decode("latin-1")) is not ssl_context


#: Cache key of a serving context: (cert PEM, key PEM, client validation, the server
#: names of the Gateway listener it serves).
ContextKey = tuple[str, str, ClientValidation | None, tuple[str, ...]]


class TLSContexts:
    """Per-worker cache of loaded certificates."""

    def __init__(self) -> None:
        self._cache: dict[ContextKey, ssl.SSLContext | None] = {}
        self._upstream: dict[tuple[UpstreamTLS, bool], ssl.SSLContext | None] = {}

    def load(self, cert_pem: str, key_pem: str, validation: ClientValidation | None = None,
             server_names: tuple[str, ...] = ()) -> ssl.SSLContext | None:
        key = (cert_pem, key_pem, validation, server_names)
        if key in self._cache:
            return self._cache[key]
        try:
            ctx: ssl.SSLContext | None = server_context(cert_pem, key_pem, validation)
        except (ssl.SSLError, ValueError, OSError) as exc:
            log.error("certificate skipped: cannot load it (or its client CA bundle): %s", exc)
            ctx = None
        self._cache[key] = ctx
        return ctx

    def store(self, certs: tuple[Certificate, ...],
              validation: ClientValidation | None = None) -> CertStore:
        """The certificates of one listener; with ``validation``, each context also
        checks client certificates (see the module docstring)."""
        return CertStore(
            certs, lambda c: self.load(c.cert_pem, c.key_pem, validation, c.server_names))

    def retain(self, used: set[ContextKey]) -> None:
        """Forget certificates no listener uses any more."""
        self._cache = {k: v for k, v in self._cache.items() if k in used}

    def upstream(self, tls: UpstreamTLS, h2: bool = False) -> ssl.SSLContext | None:
        """A client context for a backend (BackendTLSPolicy), or None if it cannot load.
        ``h2``: the backend's appProtocol asks for HTTP/2, offered first in ALPN (then
        http/1.1, which the backend may pick instead)."""
        key = (tls, h2)
        if key in self._upstream:
            return self._upstream[key]
        try:
            ctx: ssl.SSLContext | None = ssl.create_default_context(
                cadata=tls.ca_pem or None)
            assert ctx is not None
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_alpn_protocols(["h2", *ALPN] if h2 else ALPN)
            if tls.subject_alt_names:
                # Names besides ``hostname`` are accepted: check them ourselves after the
                # handshake (see upstream.verify_san).
                ctx.check_hostname = False
            if tls.client_cert_pem and tls.client_key_pem:
                _load_chain(ctx, tls.client_cert_pem, tls.client_key_pem)
        except (ssl.SSLError, ValueError, OSError) as exc:
            log.error("backend TLS settings for %s unusable: %s", tls.hostname, exc)
            ctx = None
        self._upstream[key] = ctx
        return ctx


class _AlertingSSLObject(ssl.SSLObject):
    """A server-side SSLObject whose failed handshake lets its alert out first (see the
    module docstring): the first failure is reported as "want read", after which the
    event loop sends what OpenSSL wrote (the alert); the next step raises the failure."""

    _failed: ssl.SSLError | None = None
    #: Set by the SNI callback when it refused the handshake: the reason and the name.
    _refused: tuple[str, str] | None = None
    #: The listener's hook (``dispatch_context``'s ``on_failed``), on a subclass.
    on_failed: Callable[[str, str], None] | None = None

    def do_handshake(self) -> None:
        failed = self._failed
        if failed is not None:
            raise failed
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self._failed = exc
            hook = type(self).on_failed
            if hook is not None:
                try:
                    why = self._refused or (failure_reason(exc), exc.reason or str(exc))
                    hook(*why)
                except Exception:  # counting must never break a handshake
                    log.exception("counting a failed TLS handshake failed")
            raise ssl.SSLWantReadError("handshake failed; sending the alert") from exc


#: OpenSSL's reasons (``SSLError.reason``) -> what kgw counts a failed handshake as.
_FAILURE_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol_version",
    "WRONG_VERSION_NUMBER": "protocol_version",
    "NO_PROTOCOLS_AVAILABLE": "protocol_version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "VERSION_TOO_LOW": "protocol_version",
    "HTTP_REQUEST": "not_tls",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client_certificate",
    "CERTIFICATE_VERIFY_FAILED": "client_certificate",
}


def failure_reason(exc: ssl.SSLError) -> str:
    """A failed server handshake's reason, as a metrics label: protocol_version,
    client_certificate, not_tls, or handshake (anything else)."""
    reason = exc.reason or ""
    found = _FAILURE_REASONS.get(reason)
    if found is not None:
        return found
    return "client_certificate" if "CERTIFICATE" in reason else "handshake"


def dispatch_context(get_store: Callable[[], CertStore | None],
                     validation: ClientValidation | None = None,
                     on_refused: Callable[[str | None], None] | None = None,
                     on_failed: Callable[[str, str], None] | None = None) -> ssl.SSLContext:
    """The context a listener's server socket is created with: it holds no certificate
    itself and hands each handshake to the context ``get_store()`` selects.

    ``validation`` must be the one the store's contexts were loaded with: it sets the
    verify mode every connection of this socket starts with. Raises ssl.SSLError when
    its CA bundle is unusable (the listener cannot be served safely). ``on_refused``
    is told the server name (None: none sent) of each handshake refused for it;
    ``on_failed`` is told every failed handshake (the refused ones included): its reason
    (``failure_reason``, or unknown_server_name/no_server_name) and OpenSSL's."""
    ctx = server_context(validation=validation)
    ctx.sslobject_class = _AlertingSSLObject if on_failed is None else type(
        "_ListenerSSLObject", (_AlertingSSLObject,), {"on_failed": staticmethod(on_failed)})

    def on_sni(sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        store = get_store()
        chosen = store.select(name) if store is not None else None
        if chosen is None:
            sslobj._refused = (  # type: ignore[attr-defined]
                ("unknown_server_name", f"server name {name[:253]!r}") if name else
                ("no_server_name", "no server name sent"))
            if on_refused is not None:
                try:
                    on_refused(name)
                except Exception:  # counting must never break a handshake
                    log.exception("counting a refused TLS handshake failed")
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = chosen
        return None

    ctx.sni_callback = on_sni
    return ctx
