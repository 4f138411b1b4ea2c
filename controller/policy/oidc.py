"""SecurityPolicy ``oidc``: browsers log in at an OpenID Provider before a route serves
them (authorization code flow with PKCE; Envoy Gateway's field names where it has the
feature, kgw's own for the session cookie).

::

    oidc:
      provider:
        issuer: https://id.example.com          # <issuer>/.well-known/openid-configuration
        authorizationEndpoint: https://...      # optional: overrides discovery's
        tokenEndpoint: https://...              # optional
        caCertificateRef: {name: op-ca}         # optional: Secret entry "ca.crt" (https OP)
      clientID: kgw
      clientSecret: {name: oidc-client}         # Secret entry "client-secret"
      redirectURL: https://www.example.com/oauth2/callback   # its path is served by kgw
      logoutPath: /logout                       # optional
      scopes: [profile, email]                  # "openid" is always asked
      forwardAccessToken: false                 # Authorization: Bearer <access token>
      forwardIDTokenHeader: x-id-token          # optional: the ID token in this header
      refreshToken: true                        # renew an expired access token
      defaultTokenTTL: 1h                       # when the token response has no expires_in
      tokenEndpointAuthMethod: client_secret_basic   # or client_secret_post
      timeout: 5s                               # each call to the provider
      cookieSecret: {name: oidc-cookie}         # Secret entry "keys": one base64 AES-256
                                                # key a line, newest first (it encrypts;
                                                # all decrypt: rotation)
      cookieNames: {session: kgw-oidc-session, state: kgw-oidc-state}
      cookieDomain: example.com                 # optional

The Secrets must exist and hold usable values: otherwise the policy is Invalid, naming the
field (``check_refs``), and its targets refuse every request until it is fixed.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from controller.duration import parse_duration
from controller.policy import authcommon as ac
from controller.policy.section import Section
from controller.schema.errors import FieldError
from controller.schema.nodes import Bool, ListOf, Str, obj
from kgw_l7.auth_config import OIDC

CLIENT_SECRET_KEY = "client-secret"
COOKIE_KEYS_KEY = "keys"
CA_KEY = "ca.crt"
#: At most this many cookie keys (the newest and the ones still opening old cookies).
MAX_KEYS = 8

_COOKIE_NAME = Str(min_len=1, max_len=64, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
                   pattern_hint="a cookie name")
_PATH = Str(min_len=1, max_len=1024, pattern=r"^/[^\s?#]*$",
            pattern_hint="an absolute path without query, such as '/logout'")
_DOMAIN = Str(min_len=1, max_len=253, pattern=r"^\.?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$",
              pattern_hint="a domain name")
_SCOPE = Str(min_len=1, max_len=128, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$",
             pattern_hint="a scope token (RFC 6749 section 3.3)")

def _timeout_positive(value: dict, path: str) -> Iterable[FieldError]:
    try:
        zero = "timeout" in value and parse_duration(value["timeout"]) == 0
    except (TypeError, ValueError):
        return  # (the field's own pattern reports it)
    if zero:
        yield FieldError(path + ".timeout", "must be more than 0s (a call must end)")


SCHEMA = obj({
    "provider": obj({
        "issuer": Str(min_len=1, max_len=2048, rules=(ac.uri_rule,)),
        "authorizationEndpoint": Str(min_len=1, max_len=2048, rules=(ac.uri_rule,)),
        "tokenEndpoint": Str(min_len=1, max_len=2048, rules=(ac.uri_rule,)),
        "caCertificateRef": ac.SECRET_REF,
    }, required=["issuer"]),
    "clientID": Str(min_len=1, max_len=256),
    "clientSecret": ac.SECRET_REF,
    "redirectURL": Str(min_len=1, max_len=2048, rules=(ac.uri_rule,)),
    "logoutPath": _PATH,
    "scopes": ListOf(_SCOPE, max_items=16),
    "forwardAccessToken": Bool(),
    "forwardIDTokenHeader": ac.HEADER_NAME,
    "refreshToken": Bool(),
    "defaultTokenTTL": ac.DURATION,
    "tokenEndpointAuthMethod": Str(enum=("client_secret_basic", "client_secret_post")),
    "timeout": ac.DURATION,
    "cookieSecret": ac.SECRET_REF,
    "cookieNames": obj({"session": _COOKIE_NAME, "state": _COOKIE_NAME}),
    "cookieDomain": _DOMAIN,
}, required=["provider", "clientID", "clientSecret", "redirectURL", "cookieSecret"],
   rules=[_timeout_positive])


def cookie_keys(text: str) -> tuple[list[bytes], list[str]]:
    """The AES-256 keys of a ``keys`` entry (one base64 key a line, newest first; blank
    lines and ``#`` comments left out), and what is wrong with the others."""
    keys: list[bytes] = []
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"line {n}: not base64")
            continue
        if len(key) != 32:
            problems.append(f"line {n}: {len(key)} bytes, an AES-256 key is 32")
            continue
        keys.append(key)
    if len(keys) > MAX_KEYS:
        problems.append(f"{len(keys)} keys, at most {MAX_KEYS}")
    return keys, problems


def check_refs(value: dict, path: str, refs: ac.Refs) -> Iterable[FieldError]:
    """What the Secrets the section names must hold."""
    name = value["clientSecret"]["name"]
    if not ac.secret_text(refs, name, CLIENT_SECRET_KEY):
        yield FieldError(path + ".clientSecret",
                         f"Secret {name!r} with an entry {CLIENT_SECRET_KEY!r} not found")
    name = value["cookieSecret"]["name"]
    text = ac.secret_text(refs, name, COOKIE_KEYS_KEY)
    if text is None:
        yield FieldError(path + ".cookieSecret",
                         f"Secret {name!r} with an entry {COOKIE_KEYS_KEY!r} not found")
    else:
        keys, problems = cookie_keys(text)
        if problems or not keys:
            yield FieldError(path + ".cookieSecret", f"Secret {name!r} entry "
                             f"{COOKIE_KEYS_KEY!r}: " + ("; ".join(problems) or "no key"))
    ca = value["provider"].get("caCertificateRef")
    if ca and not ac.secret_text(refs, ca["name"], CA_KEY):
        yield FieldError(path + ".provider.caCertificateRef",
                         f"Secret {ca['name']!r} with an entry {CA_KEY!r} not found")


def compile_oidc(value: dict, scope: str, refs: ac.Refs | None = None) -> OIDC:
    """(A Secret that cannot be read leaves its field empty: the check then refuses every
    request, see kgw_l7.oidc.OidcCheck; the policy is Invalid meanwhile.)"""
    p = value["provider"]
    keys, _ = cookie_keys(ac.secret_text(refs, value["cookieSecret"]["name"],
                                         COOKIE_KEYS_KEY) or "")
    ca = p.get("caCertificateRef")
    names = value.get("cookieNames") or {}
    return OIDC(
        issuer=p["issuer"], client_id=value["clientID"],
        client_secret=ac.secret_text(refs, value["clientSecret"]["name"],
                                     CLIENT_SECRET_KEY) or "",
        redirect_url=value["redirectURL"], cookie_keys=tuple(keys[:MAX_KEYS]),
        authorization_endpoint=p.get("authorizationEndpoint", ""),
        token_endpoint=p.get("tokenEndpoint", ""),
        scopes=tuple(value.get("scopes") or ()) or ("openid",),
        logout_path=value.get("logoutPath", ""),
        forward_access_token=bool(value.get("forwardAccessToken", False)),
        forward_id_token_header=(value["forwardIDTokenHeader"].lower()
                                 if value.get("forwardIDTokenHeader") else None),
        session_cookie=names.get("session", "kgw-oidc-session"),
        state_cookie=names.get("state", "kgw-oidc-state"),
        cookie_domain=value.get("cookieDomain"),
        refresh_token=bool(value.get("refreshToken", True)),
        token_endpoint_auth=value.get("tokenEndpointAuthMethod", "client_secret_basic"),
        default_token_ttl=ac.seconds(value.get("defaultTokenTTL"), 3600.0),
        timeout=ac.seconds(value.get("timeout"), 5.0),
        ca_pem=(ac.secret_text(refs, ca["name"], CA_KEY) or "") if ca else "")


SECTION = Section("oidc", SCHEMA, compile_oidc, "oidc", refs=True, check_refs=check_refs)
