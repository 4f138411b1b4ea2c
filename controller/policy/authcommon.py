"""What the SecurityPolicy auth sections share: where a credential is read from
(``extractFrom``), claim requirements, and reading the Secrets and ConfigMaps they name.

Secrets are read through ``Refs`` (the policy's namespace), handed to a section's compile.
A reference that cannot be read compiles to a check that refuses every request: a
missing Secret never opens a route.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from typing import Any, Protocol

from controller.duration import DURATION_PATTERN, parse_duration
from controller.schema.errors import FieldError
from controller.schema.nodes import ListOf, Str, obj
from kgw_l7.auth_config import ClaimRequirement, CredentialSource


class Refs(Protocol):
    """Objects of the policy's namespace, as the translation sees them."""

    def get(self, kind: str, name: str) -> dict[str, Any] | None: ...


def secret_value(secret: dict[str, Any], key: str) -> str | None:
    """A Secret entry as text: ``data`` is base64, ``stringData`` plain (None: absent or
    not text). (Not controller.translate's: the policy sections load before it.)"""
    data = secret.get("data")
    if isinstance(data, dict) and isinstance(data.get(key), str):
        try:
            return base64.b64decode(data[key], validate=True).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None
    sdata = secret.get("stringData")
    if isinstance(sdata, dict) and isinstance(sdata.get(key), str):
        return sdata[key]
    return None


def secret_text(refs: Refs | None, name: str, key: str) -> str | None:
    """A Secret's entry as text (None: no such Secret or key, or no refs at all)."""
    if refs is None:
        return None
    secret = refs.get("Secret", name)
    return secret_value(secret, key) if secret is not None else None


def config_map_text(refs: Refs | None, name: str, key: str) -> str | None:
    if refs is None:
        return None
    cm = refs.get("ConfigMap", name)
    data = cm.get("data") if cm is not None else None
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def secret_entries(refs: Refs | None, name: str) -> dict[str, str]:
    """Every entry of a Secret as text (entries that are not text are left out)."""
    if refs is None:
        return {}
    secret = refs.get("Secret", name)
    if secret is None:
        return {}
    keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
    out = {}
    for k in sorted(keys):
        v = secret_value(secret, k)
        if v is not None:
            out[k] = v
    return out


#: An HTTP field name (RFC 9110 token), as kgw compares them: lower-case.
HEADER_NAME = Str(min_len=1, max_len=256, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
                  pattern_hint="an HTTP header name")
LOCAL_NAME = Str(min_len=1, max_len=253)
DURATION = Str(pattern=DURATION_PATTERN, pattern_hint="a duration such as '5s' or '1m'")
SECRET_REF = obj({"group": Str(enum=("",)), "kind": Str(enum=("Secret",)), "name": LOCAL_NAME},
                 required=["name"])

EXTRACT_FROM = obj({
    "headers": ListOf(obj({"name": HEADER_NAME, "valuePrefix": Str(max_len=64)},
                          required=["name"]), max_items=8),
    "params": ListOf(Str(min_len=1, max_len=128), max_items=8),
    "cookies": ListOf(Str(min_len=1, max_len=128, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
                          pattern_hint="a cookie name"), max_items=8),
})

CLAIM = obj({"name": Str(min_len=1, max_len=256),
             "values": ListOf(Str(max_len=1024), max_items=64)}, required=["name"])


def sources(value: dict | None) -> tuple[CredentialSource, ...]:
    """An ``extractFrom`` as the proxy's records (headers, then params, then cookies)."""
    value = value or {}
    out = [CredentialSource("header", h["name"].lower(), h.get("valuePrefix", ""))
           for h in value.get("headers") or ()]
    out += [CredentialSource("query", p) for p in value.get("params") or ()]
    out += [CredentialSource("cookie", c) for c in value.get("cookies") or ()]
    return tuple(out)


def claims(values: Iterable[dict] | None) -> tuple[ClaimRequirement, ...]:
    return tuple(ClaimRequirement(c["name"], tuple(c.get("values") or ())) for c in values or ())


def seconds(value: str | None, default: float) -> float:
    return parse_duration(value) if value else default


def cidr_rule(value: str, path: str) -> Iterable[FieldError]:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        yield FieldError(path, f"invalid CIDR {value!r} (e.g. '10.0.0.0/8', '2001:db8::/32')")


_URI_RE = re.compile(r"https?://[^\s/?#]+[^\s]*")


def uri_rule(value: str, path: str) -> Iterable[FieldError]:
    if not _URI_RE.fullmatch(value):
        yield FieldError(path, f"invalid URI {value!r}: must be http:// or https://")
