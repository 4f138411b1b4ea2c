"""SecurityPolicy ``apiKeyAuth``: clients identified by a key (Envoy Gateway's fields).

::

    apiKeyAuth:
      credentialRefs: [{name: api-keys}]     # Secrets: each entry is client-id: key
      extractFrom: [{headers: [x-api-key]}, {params: [key]}]   # default: header x-api-key
      forwardClientIDHeader: x-client-id     # optional: the client id to the backend
      sanitize: true                         # remove the key (header, parameter, cookie)
"""

from __future__ import annotations

from controller.policy import authcommon as ac
from controller.policy.section import Section
from controller.schema.nodes import Bool, ListOf, Str, obj
from kgw_l7.auth_config import APIKeyAuth, CredentialSource

SCHEMA = obj({
    "credentialRefs": ListOf(ac.SECRET_REF, min_items=1, max_items=16),
    "extractFrom": ListOf(obj({
        "headers": ListOf(ac.HEADER_NAME, max_items=8),
        "params": ListOf(Str(min_len=1, max_len=128), max_items=8),
        "cookies": ListOf(Str(min_len=1, max_len=128), max_items=8),
    }), max_items=8),
    "forwardClientIDHeader": ac.HEADER_NAME,
    "sanitize": Bool(),
}, required=["credentialRefs"])


def compile_api_keys(value: dict, scope: str, refs: ac.Refs | None = None) -> APIKeyAuth:
    creds: list[tuple[str, str]] = []
    for ref in value["credentialRefs"]:
        creds += [(client, key.strip()) for client, key in
                  ac.secret_entries(refs, ref["name"]).items() if key.strip()]
    srcs: list[CredentialSource] = []
    for e in value.get("extractFrom") or ():
        srcs += [CredentialSource("header", h.lower()) for h in e.get("headers") or ()]
        srcs += [CredentialSource("query", p) for p in e.get("params") or ()]
        srcs += [CredentialSource("cookie", c) for c in e.get("cookies") or ()]
    kw = {"extract_from": tuple(srcs)} if srcs else {}
    return APIKeyAuth(tuple(creds), forward_client_id_header=value.get("forwardClientIDHeader"),
                      sanitize=bool(value.get("sanitize", True)), **kw)


SECTION = Section("apiKeyAuth", SCHEMA, compile_api_keys, "api_key_auth", refs=True)
