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
#: private keys.
KEY_FIELDS = frozenset({"key_pem", "client_key_pem"})


def fingerprint(secret: str) -> str:
    """What a redacted key is shown as: its size and the start of its SHA-256."""
    digest = hashlib.sha256(secret.encode()).hexdigest()[:16]
    return f"[redacted: {len(secret)} bytes, sha256 {digest}]"


def redact(value: Any) -> Any:
    """A copy of a rendered configuration with every private key replaced by its fingerprint."""
    if isinstance(value, dict):
        return {k: (fingerprint(v) if k in KEY_FIELDS and isinstance(v, str) and v else redact(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
