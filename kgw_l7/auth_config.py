"""What a route rule requires of a request before it is forwarded: the security records of
the L7 config (a SecurityPolicy's effective sections, resolved by the controller).

Plain frozen records, like ``kgw_l7.config``: Secrets and ConfigMaps are already read
(key material arrives as text), durations are seconds. They are fields of
``kgw_l7.config.RulePolicy``; ``kgw_l7.auth`` compiles them into the ordered checks a
request goes through (``AuthPipeline``).

Field names follow Envoy Gateway's SecurityPolicy where it has the feature.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

#: Where a credential is read from: a header (its value after ``prefix``), a query
#: parameter or a cookie.
SourceKind = Literal["header", "query", "cookie"]
Action = Literal["Allow", "Deny"]


@dataclass(frozen=True, slots=True)
class CredentialSource:
    kind: SourceKind
    #: Header (lower-case), query parameter or cookie name.
    name: str
    #: Headers only: what precedes the credential ("Bearer "), compared case-insensitively.
    prefix: str = ""


#: RFC 6750 section 2.1: ``Authorization: Bearer <token>``.
BEARER = CredentialSource("header", "authorization", "Bearer ")


@dataclass(frozen=True, slots=True)
class RemoteJWKS:
    """A JWKS fetched over HTTP(S) by each worker, off the request path."""

    uri: str
    #: Refetch period when the response has no ``Cache-Control: max-age``.
    refresh_interval: float = 300.0
    #: One fetch's time limit (connect, send, read the whole document).
    timeout: float = 5.0
    #: PEM bundle of the CAs trusted for an https URI; empty: the system's store.
    ca_pem: str = ""


@dataclass(frozen=True, slots=True)
class ClaimToHeader:
    claim: str
    header: str  # lower-case


@dataclass(frozen=True, slots=True)
class JWTProvider:
    name: str
    #: The ``iss`` a token must carry (None: any).
    issuer: str | None = None
    #: One of them must be in the token's ``aud`` (empty: ``aud`` is not checked).
    audiences: tuple[str, ...] = ()
    #: A JWKS document (JSON text) given inline or read from a Secret or a ConfigMap.
    local_jwks: str = ""
    remote_jwks: RemoteJWKS | None = None
    #: HS256/384/512 only with a secret given explicitly (a Secret): never derived from a
    #: JWKS, so a public key can never be used as an HMAC secret (algorithm confusion).
    hmac_secret: bytes = dataclasses.field(default=b"", repr=False)
    extract_from: tuple[CredentialSource, ...] = (BEARER,)
    claim_to_headers: tuple[ClaimToHeader, ...] = ()
    #: Leave the token in the request sent to the backend (default: removed from the header
    #: it came in).
    forward: bool = False
    #: Tolerance for ``exp`` and ``nbf``, seconds.
    clock_skew: float = 60.0


@dataclass(frozen=True, slots=True)
class ClaimRequirement:
    """The claim (a dotted path into the payload) exists and, when ``values`` is set, one
    of its values (string, number or boolean as text; a list: any element) is listed."""

    name: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JWT:
    providers: tuple[JWTProvider, ...]
    #: All of these must be in the token's ``scope`` (space-separated) or ``scp``: 403
    #: with ``insufficient_scope`` otherwise.
    required_scopes: tuple[str, ...] = ()
    #: Each must hold: 403 otherwise.
    required_claims: tuple[ClaimRequirement, ...] = ()


@dataclass(frozen=True, slots=True)
class OIDC:
    """OpenID Connect login for browsers (authorization code flow with PKCE); the session
    lives in an encrypted cookie (``kgw_l7.oidc``)."""

    issuer: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    #: Where the provider sends the browser back (its path is served by kgw).
    redirect_url: str
    #: AES-256 keys of the session cookie, newest first: the first seals, any opens.
    cookie_keys: tuple[bytes, ...] = dataclasses.field(repr=False)
    #: Endpoints that override the discovery document's ("": the document's).
    authorization_endpoint: str = ""
    token_endpoint: str = ""
    scopes: tuple[str, ...] = ("openid",)
    #: A request to this path ends the session ("": no logout path).
    logout_path: str = ""
    #: The access token goes to the backend as ``Authorization: Bearer``.
    forward_access_token: bool = False
    #: The ID token goes to the backend in this header (None: not sent).
    forward_id_token_header: str | None = None
    session_cookie: str = "kgw-oidc-session"
    #: The state cookie of a login in progress is this name, "-", its state's first chars.
    state_cookie: str = "kgw-oidc-state"
    cookie_domain: str | None = None
    #: Renew expired access tokens with the refresh token (else: log in again).
    refresh_token: bool = True
    #: "client_secret_basic" or "client_secret_post" (RFC 6749 section 2.3.1).
    token_endpoint_auth: str = "client_secret_basic"
    #: Lifetime of an access token whose response has no ``expires_in``.
    default_token_ttl: float = 3600.0
    #: One call to the provider (discovery, token, JWKS), seconds.
    timeout: float = 5.0
    clock_skew: float = 60.0
    #: PEM bundle of the CAs trusted for an https provider; empty: the system's store.
    ca_pem: str = ""


@dataclass(frozen=True, slots=True)
class BasicAuth:
    #: (user, hash) from an htpasswd file: bcrypt (``$2y$``/``$2b$``/``$2a$``) or
    #: ``{SHA}`` (base64 SHA-1).
    users: tuple[tuple[str, str], ...] = dataclasses.field(repr=False)
    #: The authenticated user's name goes to the backend in this header (None: not sent).
    forward_username_header: str | None = None
    realm: str = "kgw"


@dataclass(frozen=True, slots=True)
class APIKeyAuth:
    #: (client id, key) pairs.
    credentials: tuple[tuple[str, str], ...] = dataclasses.field(repr=False)
    extract_from: tuple[CredentialSource, ...] = (CredentialSource("header", "x-api-key"),)
    #: The client id goes to the backend in this header (None: not sent).
    forward_client_id_header: str | None = None
    #: Remove the key from the header it came in before forwarding.
    sanitize: bool = True


@dataclass(frozen=True, slots=True)
class HeaderRequirement:
    name: str  # lower-case
    #: Empty: the header is present; otherwise one of its values is listed.
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationRule:
    """Matches when every condition given holds (an empty condition holds)."""

    name: str
    action: Action
    #: The client's address in one of these CIDRs.
    client_cidrs: tuple[str, ...] = ()
    #: The verified JWT's claims and scopes (a request without one does not match).
    claims: tuple[ClaimRequirement, ...] = ()
    scopes: tuple[str, ...] = ()
    headers: tuple[HeaderRequirement, ...] = ()
    methods: tuple[str, ...] = ()
    #: Path prefixes (segment-wise: "/admin" matches "/admin" and "/admin/x").
    paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Authorization:
    """The first rule that matches decides; none: ``default_action`` (Deny: default deny
    as soon as rules exist)."""

    rules: tuple[AuthorizationRule, ...] = ()
    default_action: Action = "Deny"


__all__ = [
    "APIKeyAuth", "Action", "Authorization", "AuthorizationRule", "BEARER", "BasicAuth",
    "ClaimRequirement", "ClaimToHeader", "CredentialSource", "HeaderRequirement", "JWT",
    "JWTProvider", "OIDC", "RemoteJWKS", "SourceKind",
]
