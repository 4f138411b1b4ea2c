"""SecurityPolicy ``jwt``: a route accepts a request with a valid JSON Web Token from one
of its providers (Envoy Gateway's field names).

::

    jwt:
      providers:
      - name: example
        issuer: https://issuer.example.com        # the token's iss (optional)
        audiences: [api]                          # one must be in aud (optional)
        remoteJWKS: {uri: https://issuer.example.com/jwks.json,
                     refreshInterval: 5m, timeout: 5s}
        # or localJWKS: {type: Inline, inline: '{"keys": [...]}'}
        #    localJWKS: {type: ValueRef, valueRef: {kind: ConfigMap|Secret, name: jwks}}
        #               (the entry "jwks.json")
        # or hmacSecretRef: {name: hs-secret}   (HS256/384/512; the entry "secret")
        extractFrom: {headers: [{name: x-token, valuePrefix: ""}], params: [token],
                      cookies: [session]}      # default: Authorization: Bearer
        claimToHeaders: [{claim: sub, header: x-user}]
        forward: false                           # keep the token for the backend
        clockSkew: 60s
      requiredScopes: [orders:write]             # else 403 insufficient_scope
      requiredClaims: [{name: org.team, values: [blue]}]

Keys: RS256/384/512, PS256/384/512, ES256/384, EdDSA; a JWKS key of another kind is
skipped (an inline JWKS without one usable key is refused). Tokens of HS* algorithms are
accepted only from a provider with ``hmacSecretRef``, never with a JWKS key.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.policy import authcommon as ac
from controller.policy.section import Section
from controller.schema.errors import FieldError
from controller.schema.nodes import Bool, ListOf, Str, obj
from kgw_l7.auth import parse_jwks
from kgw_l7.auth_config import (
    BEARER, JWT, ClaimToHeader, JWTProvider, RemoteJWKS,
)

#: The ConfigMap / Secret entry of a JWKS given by reference, and of an HMAC secret.
JWKS_KEY = "jwks.json"
HMAC_KEY = "secret"


def _inline_rule(value: str, path: str) -> Iterable[FieldError]:
    try:
        keys, skipped = parse_jwks(value)
    except ValueError as e:
        yield FieldError(path, f"invalid JWKS: {e}")
        return
    if not keys:
        yield FieldError(path, "no usable key (" + "; ".join(skipped[:3]) + ")")


def _local_rule(value: dict, path: str) -> Iterable[FieldError]:
    if value.get("type") == "Inline" and not value.get("inline"):
        yield FieldError(path, "type Inline needs inline")
    if value.get("type") == "ValueRef" and not value.get("valueRef"):
        yield FieldError(path, "type ValueRef needs valueRef")


def _one_key_source(value: dict, path: str) -> Iterable[FieldError]:
    given = [k for k in ("remoteJWKS", "localJWKS", "hmacSecretRef") if value.get(k)]
    if len(given) != 1:
        yield FieldError(path, "exactly one of remoteJWKS, localJWKS, hmacSecretRef must be "
                               f"set (set: {', '.join(given) or 'none'})")


PROVIDER = obj({
    "name": Str(min_len=1, max_len=253),
    "issuer": Str(min_len=1, max_len=1024),
    "audiences": ListOf(Str(min_len=1, max_len=1024), max_items=16),
    "remoteJWKS": obj({
        "uri": Str(min_len=1, max_len=2048, rules=(ac.uri_rule,)),
        "refreshInterval": ac.DURATION,
        "timeout": ac.DURATION,
    }, required=["uri"]),
    "localJWKS": obj({
        "type": Str(enum=("Inline", "ValueRef")),
        "inline": Str(max_len=65536, rules=(_inline_rule,)),
        "valueRef": obj({"group": Str(enum=("",)), "kind": Str(enum=("ConfigMap", "Secret")),
                         "name": ac.LOCAL_NAME}, required=["kind", "name"]),
    }, required=["type"], rules=[_local_rule]),
    "hmacSecretRef": ac.SECRET_REF,
    "extractFrom": ac.EXTRACT_FROM,
    "claimToHeaders": ListOf(obj({"claim": Str(min_len=1, max_len=256),
                                  "header": ac.HEADER_NAME}, required=["claim", "header"]),
                             max_items=16),
    "forward": Bool(),
    "clockSkew": ac.DURATION,
}, required=["name"], rules=[_one_key_source])

SCHEMA = obj({
    "providers": ListOf(PROVIDER, min_items=1, max_items=4, map_keys=("name",)),
    "requiredScopes": ListOf(Str(min_len=1, max_len=256), max_items=32),
    "requiredClaims": ListOf(ac.CLAIM, max_items=16),
}, required=["providers"])


def _provider(p: dict, refs: ac.Refs | None) -> JWTProvider:
    remote = None
    if p.get("remoteJWKS"):
        r = p["remoteJWKS"]
        remote = RemoteJWKS(r["uri"], ac.seconds(r.get("refreshInterval"), 300.0),
                            ac.seconds(r.get("timeout"), 5.0))
    local = ""
    lj = p.get("localJWKS")
    if lj:
        if lj.get("type") == "Inline":
            local = lj.get("inline", "")
        else:
            ref = lj["valueRef"]
            read = ac.config_map_text if ref["kind"] == "ConfigMap" else ac.secret_text
            local = read(refs, ref["name"], JWKS_KEY) or ""
            try:
                parse_jwks(local)
            except ValueError:
                local = ""  # (unreadable: the provider has no key, every token is refused)
    secret = b""
    if p.get("hmacSecretRef"):
        secret = (ac.secret_text(refs, p["hmacSecretRef"]["name"], HMAC_KEY) or "").encode()
    return JWTProvider(
        name=p["name"], issuer=p.get("issuer"), audiences=tuple(p.get("audiences") or ()),
        local_jwks=local, remote_jwks=remote, hmac_secret=secret,
        extract_from=ac.sources(p.get("extractFrom")) or (BEARER,),
        claim_to_headers=tuple(ClaimToHeader(c["claim"], c["header"].lower())
                               for c in p.get("claimToHeaders") or ()),
        forward=bool(p.get("forward", False)),
        clock_skew=ac.seconds(p.get("clockSkew"), 60.0))


def compile_jwt(value: dict, scope: str, refs: ac.Refs | None = None) -> JWT:
    return JWT(tuple(_provider(p, refs) for p in value["providers"]),
               required_scopes=tuple(value.get("requiredScopes") or ()),
               required_claims=ac.claims(value.get("requiredClaims")))


SECTION = Section("jwt", SCHEMA, compile_jwt, "jwt", refs=True)
