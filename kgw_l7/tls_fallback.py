"""``AllowInsecureFallback``: ask every client for a certificate, refuse none.

Gateway API's ``frontendValidation`` mode AllowInsecureFallback accepts a connection
"even if the client certificate is not presented or fails verification" -- but the
certificate is still requested, so clients present theirs exactly as under
AllowValidOnly (the conformance suite asserts the request), and OpenSSL still checks
that a client holds the key of the certificate it presents (CertificateVerify).

Python's ``ssl`` cannot express this: CERT_OPTIONAL asks for a certificate but fails
the handshake when one does not verify, and no verify callback is exposed. OpenSSL
has one (``SSL_CTX_set_verify``): this module installs a callback that reports what
OpenSSL found wrong with the chain (against the listener's CA bundle: chain, validity,
the client-auth purpose) and then lets the handshake go on. It is set on the context
through the ``_ssl`` extension's own libssl (loaded with ctypes) and the ``SSL_CTX``
pointer of CPython's ``SSLContext`` object -- the first field after the object header,
the layout of CPython 3.8 to 3.14. Anywhere else (another interpreter or version,
a free-threaded build) ``install`` raises ssl.SSLError and the listener is reported
as not served rather than served without asking.

CPython's ``verify_mode`` setter keeps the callback that is installed, and each
connection copies it from the context it is created with (the listener's dispatch
context, see kgw_l7.tls), so it is installed on every context of such a listener.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
import sys
import sysconfig
import time

log = logging.getLogger("kgw.l7.tls")

SSL_VERIFY_PEER = 0x01
#: Failed verifications are logged at most this often (each connection is still counted).
LOG_INTERVAL_S = 60.0

_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


class _Counters:
    """What the callback saw: chains that failed verification, and when that was last logged."""

    failed = 0
    unlogged = 0
    last_logged = 0.0


counters = _Counters()


def _libssl() -> ctypes.CDLL | None:
    """The libssl the ``_ssl`` extension is linked with (dlsym on it searches its
    dependencies), with the few functions used here typed; None when unavailable."""
    if sys.implementation.name != "cpython" or not (3, 8) <= sys.version_info[:2] <= (3, 14):
        return None
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None  # free-threaded builds lay objects out differently
    try:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
        lib.SSL_CTX_set_verify.restype = None
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        lib.SSL_CTX_get_verify_callback.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_callback.restype = ctypes.c_void_p
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.X509_STORE_CTX_get_error.argtypes = [ctypes.c_void_p]
        lib.X509_STORE_CTX_get_error.restype = ctypes.c_int
        lib.X509_STORE_CTX_get_error_depth.argtypes = [ctypes.c_void_p]
        lib.X509_STORE_CTX_get_error_depth.restype = ctypes.c_int
        lib.X509_verify_cert_error_string.argtypes = [ctypes.c_long]
        lib.X509_verify_cert_error_string.restype = ctypes.c_char_p
        return lib
    except (ImportError, OSError, AttributeError):
        return None


_LIB = _libssl()


def _on_verify(preverify_ok: int, store_ctx: int | None) -> int:
    """OpenSSL's verify callback: note a failed check, then accept (return 1)."""
    if preverify_ok or _LIB is None or not store_ctx:
        return 1
    try:
        counters.failed += 1
        counters.unlogged += 1
        now = time.monotonic()
        if now - counters.last_logged >= LOG_INTERVAL_S:
            err = _LIB.X509_STORE_CTX_get_error(store_ctx)
            depth = _LIB.X509_STORE_CTX_get_error_depth(store_ctx)
            reason = (_LIB.X509_verify_cert_error_string(err) or b"?").decode("ascii", "replace")
            log.warning("client certificate failed verification (%s, at depth %d) on an "
                        "AllowInsecureFallback listener; served anyway (%d such check(s) since "
                        "the last report)",
                        reason, depth, counters.unlogged)
            counters.last_logged, counters.unlogged = now, 0
    except Exception:  # never let a report break a handshake
        pass
    return 1


_CALLBACK = _VERIFY_CB(_on_verify)  # kept alive for as long as OpenSSL may call it


def _ctx_pointer(ctx: ssl.SSLContext) -> int:
    """The ``SSL_CTX *`` of a CPython SSLContext: the first field after the object header."""
    value = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not value:
        raise ssl.SSLError("AllowInsecureFallback: cannot find the OpenSSL context of an "
                           "SSLContext")
    return value


def available() -> bool:
    return _LIB is not None


def install(ctx: ssl.SSLContext) -> None:
    """Make ``ctx`` (a server context whose verify locations are loaded) request a
    client certificate and accept the handshake whatever the verification says.
    Raises ssl.SSLError when this cannot be done here."""
    if _LIB is None:
        raise ssl.SSLError("AllowInsecureFallback needs OpenSSL's verify callback, which this "
                           f"Python ({sys.implementation.name} {sys.version.split()[0]}) does not "
                           f"let kgw set")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ptr = _ctx_pointer(ctx)
    # the pointer must be the context's own: its options and verify mode read back
    if (_LIB.SSL_CTX_get_options(ptr) != int(ctx.options)
            or _LIB.SSL_CTX_get_verify_mode(ptr) != SSL_VERIFY_PEER):
        raise ssl.SSLError("AllowInsecureFallback: the OpenSSL context does not match the "
                           "SSLContext")
    _LIB.SSL_CTX_set_verify(ptr, SSL_VERIFY_PEER, _CALLBACK)
    if _LIB.SSL_CTX_get_verify_callback(ptr) != ctypes.cast(_CALLBACK, ctypes.c_void_p).value:
        raise ssl.SSLError("AllowInsecureFallback: the verify callback did not take")
