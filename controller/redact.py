"""Key material never leaves kgw through what it renders.

The data-plane configurations carry private keys (serving certificates, the client
certificate a Gateway presents to TLS backends). ``/config_dump`` and ``kgw translate``
show those configurations to people and scripts; they show each key as a fingerprint
instead, enough to tell which key is in use and whether it changed, nothing to use it.
(The records themselves keep the keys out of their ``repr``, so a log line or a
traceback that prints one does not leak it either: ``kgw_l7.config``.)
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Fields of the rendered configurations (``to_dict`` of kgw_l7/kgw_l4 records) that hold
#: private keys or secrets (a SecurityPolicy's HMAC secret, OIDC client secret and
#: cookie keys).
KEY_FIELDS = frozenset({"key_pem", "client_key_pem", "hmac_secret", "client_secret",
                        "cookie_keys"})


def fingerprint(secret: str | bytes) -> str:
    """What a redacted key is shown as: its size and the start of its SHA-256."""
    data = secret.encode() if isinstance(secret, str) else secret
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"[redacted: {len(data)} bytes, sha256 {digest}]"


def _hidden(v: Any) -> Any:
    if isinstance(v, (str, bytes)):
        return fingerprint(v) if v else ""
    if isinstance(v, list):
        return [_hidden(x) for x in v]
    return v


def redact(value: Any) -> Any:
    """A copy of a rendered configuration with every private key replaced by its fingerprint."""
    if isinstance(value, dict):
        return {k: _hidden(v) if k in KEY_FIELDS else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
