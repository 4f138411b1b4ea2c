"""The SecurityPolicy auth sections: schema errors naming the field, and the compiled
records (table tests, no I/O)."""

from __future__ import annotations

import base64
import hashlib
import json

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from controller.policy import apikeyauth, authorization, basicauth
from controller.policy import oidc as oidc_section
from controller.policy import jwt as jwt_section
from controller.schema.nodes import check
from kgw_l7.auth_config import BEARER, CredentialSource

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWKS = json.dumps({"keys": [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(
    KEY.public_key())), "kid": "k1"}]})


class Refs:
    def __init__(self, **objs):
        self.objs = objs

    def get(self, kind, name):
        return self.objs.get(f"{kind}/{name}")


def secret(**data):
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def errors(section, value):
    return [f"{e.path}: {e.message}" for e in check(section.SECTION.schema, value, "spec."
                                                   + section.SECTION.field)]


@pytest.mark.parametrize("section,value,field", [
    (jwt_section, {"providers": []}, "spec.jwt.providers"),
    (jwt_section, {"providers": [{"name": "p"}]}, "spec.jwt.providers[0]"),
    (jwt_section, {"providers": [{"name": "p", "remoteJWKS": {"uri": "ftp://x"}}]},
     "spec.jwt.providers[0].remoteJWKS.uri"),
    (jwt_section, {"providers": [{"name": "p", "localJWKS": {"type": "Inline",
                                                             "inline": "{}"}}]},
     "spec.jwt.providers[0].localJWKS.inline"),
    (jwt_section, {"providers": [{"name": "p", "localJWKS": {
        "type": "Inline", "inline": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'}}]},
     "spec.jwt.providers[0].localJWKS.inline"),
    (jwt_section, {"providers": [{"name": "p", "remoteJWKS": {"uri": "https://x/j"},
                                  "clockSkew": "soon"}]}, "spec.jwt.providers[0].clockSkew"),
    (basicauth, {}, "spec.basicAuth.users"),
    (basicauth, {"users": {"name": "h"}, "forwardUsernameHeader": "bad header"},
     "spec.basicAuth.forwardUsernameHeader"),
    (apikeyauth, {"credentialRefs": []}, "spec.apiKeyAuth.credentialRefs"),
    (authorization, {"rules": [{"name": "r", "action": "Maybe"}]},
     "spec.authorization.rules[0].action"),
    (authorization, {"rules": [{"name": "r", "action": "Allow",
                                "principal": {"clientCIDRs": ["10.0.0.300/8"]}}]},
     "spec.authorization.rules[0].principal.clientCIDRs[0]"),
])
def test_schema_errors_name_the_field(section, value, field):
    errs = errors(section, value)
    assert any(e.startswith((field + ":", field + "[")) for e in errs), errs


def test_jwt_compiles():
    value = {"providers": [
        {"name": "a", "issuer": "https://i", "audiences": ["api"],
         "localJWKS": {"type": "Inline", "inline": JWKS},
         "claimToHeaders": [{"claim": "sub", "header": "X-User"}], "clockSkew": "5s"},
        {"name": "b", "remoteJWKS": {"uri": "https://i/jwks", "refreshInterval": "1m",
                                     "timeout": "2s"},
         "extractFrom": {"headers": [{"name": "X-Token"}], "params": ["t"], "cookies": ["c"]},
         "forward": True},
        {"name": "c", "localJWKS": {"type": "ValueRef",
                                    "valueRef": {"kind": "ConfigMap", "name": "keys"}}},
        {"name": "d", "hmacSecretRef": {"name": "hs"}},
    ], "requiredScopes": ["read"], "requiredClaims": [{"name": "org", "values": ["x"]}]}
    assert errors(jwt_section, value) == []
    refs = Refs(**{"ConfigMap/keys": {"data": {"jwks.json": JWKS}},
                   "Secret/hs": secret(secret="0123456789abcdef0123456789abcdef")})
    got = jwt_section.compile_jwt(value, "scope", refs)
    a, b, c, d = got.providers
    assert (a.issuer, a.audiences, a.clock_skew, a.extract_from) == (
        "https://i", ("api",), 5.0, (BEARER,))
    assert a.claim_to_headers[0].header == "x-user"
    assert b.remote_jwks.uri == "https://i/jwks" and b.remote_jwks.refresh_interval == 60.0
    assert b.extract_from == (CredentialSource("header", "x-token"),
                              CredentialSource("query", "t"), CredentialSource("cookie", "c"))
    assert b.forward and not a.forward
    assert c.local_jwks == JWKS
    assert d.hmac_secret == b"0123456789abcdef0123456789abcdef"
    assert got.required_scopes == ("read",) and got.required_claims[0].values == ("x",)
    # a missing ConfigMap/Secret: the provider has no key (every token refused), never open
    missing = jwt_section.compile_jwt(value, "scope", Refs())
    assert missing.providers[2].local_jwks == "" and missing.providers[3].hmac_secret == b""


def test_basic_auth_compiles_htpasswd():
    sha = "{SHA}" + base64.b64encode(hashlib.sha1(b"pw").digest()).decode()
    bc = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    text = f"# users\nann:{bc}\nben:{sha}\ncarl:$apr1$xyz$abc\nbroken\n"
    users, skipped = basicauth.parse_htpasswd(text)
    assert users == [("ann", bc), ("ben", sha)] and len(skipped) == 2
    got = basicauth.compile_basic({"users": {"name": "h"}, "forwardUsernameHeader": "X-User"},
                                  "s", Refs(**{"Secret/h": secret(**{".htpasswd": text})}))
    assert got.users == (("ann", bc), ("ben", sha)) and got.forward_username_header == "X-User"
    assert basicauth.compile_basic({"users": {"name": "h"}}, "s", Refs()).users == ()


def test_api_keys_compile():
    value = {"credentialRefs": [{"name": "k1"}, {"name": "k2"}],
             "extractFrom": [{"headers": ["X-Key"]}, {"params": ["key"]}],
             "forwardClientIDHeader": "x-client"}
    assert errors(apikeyauth, value) == []
    got = apikeyauth.compile_api_keys(value, "s", Refs(**{
        "Secret/k1": secret(alice="key-a\n"), "Secret/k2": secret(bob="key-b")}))
    assert got.credentials == (("alice", "key-a"), ("bob", "key-b"))
    assert got.extract_from == (CredentialSource("header", "x-key"),
                                CredentialSource("query", "key"))
    assert got.sanitize


def test_authorization_compiles():
    value = {"rules": [{"name": "r", "action": "Allow",
                        "principal": {"clientCIDRs": ["10.0.0.0/8"],
                                      "jwt": {"scopes": ["a"], "claims": [{"name": "role"}]},
                                      "headers": [{"name": "X-Team", "values": ["blue"]}]},
                        "operation": {"methods": ["GET"], "paths": ["/admin"]}}]}
    assert errors(authorization, value) == []
    got = authorization.compile_authorization(value, "s")
    assert got.default_action == "Deny"
    r = got.rules[0]
    assert (r.client_cidrs, r.scopes, r.methods, r.paths) == (
        ("10.0.0.0/8",), ("a",), ("GET",), ("/admin",))
    assert r.headers[0].name == "x-team" and r.claims[0].name == "role"


def test_a_changed_secret_reaches_the_rules() -> None:
    """The incremental translator: editing the Secret a section reads re-resolves the
    namespace's policies and the rules they apply to."""
    from controller.objects import ObjectKey
    from controller.source import Event, EventType
    from controller.translate import Translator
    from tests.policy.worlds import base, ref, rule_policies, tp
    from tests.translate.worlds import norm, store_of

    def keys_secret(key: str) -> dict:
        return {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "keys", "namespace": "default"},
                "data": {"alice": base64.b64encode(key.encode()).decode()}}

    pol = tp("p", [ref("HTTPRoute", "r")], kind="SecurityPolicy",
             apiKeyAuth={"credentialRefs": [{"name": "keys"}]})
    store = store_of(base() + [pol, keys_secret("one")])
    tr = Translator()

    def creds(t):
        return rule_policies(t)["default/r/1"].api_key_auth.credentials

    assert creds(tr.update(store, set())) == (("alice", "one"),)
    edited = norm(keys_secret("two"))
    store.apply([Event(EventType.MODIFIED, ObjectKey.of(edited), edited, "2", 2)])
    assert creds(tr.update(store, {ObjectKey.of(edited)})) == (("alice", "two"),)


OIDC_VALUE = {"provider": {"issuer": "https://id.example.com"}, "clientID": "kgw",
              "clientSecret": {"name": "oidc-client"},
              "redirectURL": "https://app.example.com/oauth2/callback",
              "cookieSecret": {"name": "oidc-cookie"}}
COOKIE_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize("value,field", [
    ({**OIDC_VALUE, "redirectURL": "app/callback"}, "spec.oidc.redirectURL"),
    ({**OIDC_VALUE, "provider": {"issuer": "ftp://id"}}, "spec.oidc.provider.issuer"),
    ({k: v for k, v in OIDC_VALUE.items() if k != "clientSecret"}, "spec.oidc"),
    ({**OIDC_VALUE, "logoutPath": "logout"}, "spec.oidc.logoutPath"),
    ({**OIDC_VALUE, "timeout": "0s"}, "spec.oidc.timeout"),
    ({**OIDC_VALUE, "tokenEndpointAuthMethod": "private_key_jwt"},
     "spec.oidc.tokenEndpointAuthMethod"),
    ({**OIDC_VALUE, "cookieNames": {"session": "a b"}}, "spec.oidc.cookieNames.session"),
])
def test_oidc_schema_errors_name_the_field(value, field):
    errs = errors(oidc_section, value)
    assert any(e.startswith((field + ":", field + "[", field + ".")) for e in errs), errs


def test_oidc_secrets_are_checked_and_compiled():
    good = Refs(**{"Secret/oidc-client": secret(**{"client-secret": "s3cret"}),
                   "Secret/oidc-cookie": secret(keys=f"# newest first\n{COOKIE_KEY}\n"
                                                     + base64.b64encode(b"k" * 32).decode())})
    assert list(oidc_section.check_refs(OIDC_VALUE, "spec.oidc", good)) == []
    rec = oidc_section.compile_oidc({**OIDC_VALUE, "scopes": ["email"],
                                     "forwardIDTokenHeader": "X-ID-Token",
                                     "defaultTokenTTL": "10m"}, "s", good)
    assert (rec.client_secret, rec.cookie_keys) == ("s3cret", (bytes(range(32)), b"k" * 32))
    assert (rec.scopes, rec.forward_id_token_header, rec.default_token_ttl) == (
        ("email",), "x-id-token", 600.0)
    assert rec.token_endpoint_auth == "client_secret_basic" and rec.refresh_token

    def problems(**objs):
        return [f"{e.path}: {e.message}" for e in
                oidc_section.check_refs(OIDC_VALUE, "spec.oidc", Refs(**objs))]

    assert problems() == [
        "spec.oidc.clientSecret: Secret 'oidc-client' with an entry 'client-secret' not found",
        "spec.oidc.cookieSecret: Secret 'oidc-cookie' with an entry 'keys' not found"]
    short = problems(**{"Secret/oidc-client": secret(**{"client-secret": "s"}),
                        "Secret/oidc-cookie": secret(keys="c2hvcnQ=\n###")})
    assert short == ["spec.oidc.cookieSecret: Secret 'oidc-cookie' entry 'keys': line 1: 5 "
                     "bytes, an AES-256 key is 32"]


def test_an_oidc_policy_without_its_secret_is_invalid_and_fails_closed() -> None:
    from kgw_l7.auth_config import Authorization
    from tests.policy.worlds import ancestors, base, ref, rule_policies, run, tp

    t = run(base() + [tp("login", [ref("HTTPRoute", "r")], kind="SecurityPolicy",
                         oidc=OIDC_VALUE)])
    [(anc, reason, msg)] = ancestors(t, "login", kind="SecurityPolicy")
    assert (anc, reason) == ("Gateway/gw", "Invalid")
    assert msg.startswith("spec.oidc.clientSecret: Secret 'oidc-client'"), msg
    assert all(p is not None and p.authorization == Authorization() and p.oidc is None
               for p in rule_policies(t).values())
