"""A real OpenID Provider for the tests, built from Authlib's server components: the
authorization code grant with PKCE (RFC 7636) and OpenID Connect's ``OpenIDCode``
extension (ID tokens signed with a key made here), the refresh token grant, client
authentication by ``client_secret_basic`` and ``client_secret_post``. It serves
discovery, authorize (the user "alice" consents at once), token, jwks and end_session
over HTTP on loopback, in a thread of the test process.

What the tests steer: ``expires_in`` (short, to see a refresh), ``down`` (every request
answered 503, as a provider being deployed), ``hang`` (discovery never answers), and what
they read: the requests it saw (``seen``: grant types, client authentication methods,
authorize parameters, logouts).
"""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
import urllib.parse
from collections import defaultdict
from typing import Any

import jwt
from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin, AuthorizationServer, ClientMixin, OAuth2Payload, OAuth2Request,
    TokenMixin,
)
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from cryptography.hazmat.primitives.asymmetric import rsa

USER = "alice"


class Client(ClientMixin):
    def __init__(self, client_id: str, secret: str, redirect_uris: list[str]) -> None:
        self.client_id = client_id
        self.secret = secret
        self.redirect_uris = redirect_uris

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        allowed = {"openid", "profile", "email", "orders"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


class Code(AuthorizationCodeMixin):
    def __init__(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        self.code = code
        self.client_id = request.client.get_client_id()
        self.redirect_uri = data.get("redirect_uri", "")
        self.scope = request.payload.scope or ""
        self.nonce = data.get("nonce")
        self.code_challenge = data.get("code_challenge")
        self.code_challenge_method = data.get("code_challenge_method")
        self.auth_time = int(time.time())

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str:
        return "0"

    def get_amr(self) -> list[str]:
        return ["pwd"]


class Token(TokenMixin):
    def __init__(self, data: dict[str, Any], client_id: str) -> None:
        self.data = data
        self.client_id = client_id
        self.issued = time.time()
        self.revoked = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.data.get("scope", "")

    def get_expires_in(self) -> int:
        return int(self.data.get("expires_in", 0))

    def is_expired(self) -> bool:
        return False  # (the refresh token does not expire here)

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return USER

    def get_client(self) -> str:
        return self.client_id


class _Payload(OAuth2Payload):
    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    @property
    def data(self) -> dict[str, str]:
        return self._values

    @property
    def datalist(self) -> defaultdict[str, list]:
        out: defaultdict[str, list] = defaultdict(list)
        for k, v in self._values.items():
            out[k].append(v)
        return out


class Request(OAuth2Request):
    """An HTTP request as Authlib's grants read it (the framework integration's part)."""

    def __init__(self, method: str, uri: str, headers: Any, query: dict[str, str],
                 form: dict[str, str]) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = query
        self._form = form
        self.payload = _Payload({**query, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class Provider:
    """The OP: Authlib's server plus the HTTP front (``start`` / ``close``)."""

    def __init__(self, client_id: str = "kgw", secret: str = "s3cret",
                 redirect_uris: tuple[str, ...] = ()) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "op-1"
        self.client = Client(client_id, secret, list(redirect_uris))
        self.codes: dict[str, Code] = {}
        self.refresh: dict[str, Token] = {}
        self.expires_in = 300
        self.down = False
        self.hang = False
        self.seen: defaultdict[str, list[Any]] = defaultdict(list)
        self.lock = threading.Lock()
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.http.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.server = self._server()

    # -- Authlib's server, configured --------------------------------------------------

    def _server(self) -> AuthorizationServer:
        op = self
        server = AuthorizationServer(scopes_supported=["openid", "profile", "email", "orders"])
        server.query_client = lambda cid: op.client if cid == op.client.client_id else None

        def save_token(token: dict[str, Any], request: OAuth2Request) -> None:
            if token.get("refresh_token"):
                op.refresh[token["refresh_token"]] = Token(token, request.client.client_id)

        server.save_token = save_token
        server.handle_response = lambda status, body, headers: (status, body, headers)
        server.send_signal = lambda *a, **kw: None
        server.create_oauth2_request = lambda r: r
        server.register_token_generator("default", BearerTokenGenerator(
            lambda **kw: secrets.token_urlsafe(24), lambda **kw: secrets.token_urlsafe(24),
            lambda client, grant_type: op.expires_in))

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
                op.codes[code] = Code(code, request)

            def query_authorization_code(self, code: str, client: ClientMixin) -> Code | None:
                c = op.codes.get(code)
                return c if c is not None and c.client_id == client.get_client_id() else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                op.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> str:
                return USER

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                t = op.refresh.get(refresh_token)
                return t if t is not None and not t.revoked else None

            def authenticate_user(self, credential: Token) -> str:
                return USER

            def revoke_old_credential(self, credential: Token) -> None:
                credential.revoked = True

        class IDToken(OpenIDCode):
            def resolve_client_private_key(self, client: ClientMixin) -> Any:
                return op.private_jwk()

            def get_client_claims(self, client: ClientMixin) -> dict[str, Any]:
                return {"iss": op.issuer, "aud": [client.get_client_id()]}

            def get_encode_header(self, client: ClientMixin) -> dict[str, str]:
                return {"alg": "RS256", "kid": op.kid}

            def get_client_algorithm(self, client: ClientMixin) -> str:
                return "RS256"

            def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
                return any(c.nonce == nonce for c in op.codes.values())

            def generate_user_info(self, user: str, scope: str) -> UserInfo:
                return UserInfo(sub=user, name="Alice", email="alice@example.test")

        server.register_grant(CodeGrant, [CodeChallenge(required=True),
                                          IDToken(require_nonce=True)])
        server.register_grant(RefreshGrant)
        return server

    def private_jwk(self) -> dict[str, Any]:
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key))
        return {**d, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**d, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def discovery(self) -> dict[str, Any]:
        i = self.issuer
        return {"issuer": i, "authorization_endpoint": i + "/authorize",
                "token_endpoint": i + "/token", "jwks_uri": i + "/jwks",
                "end_session_endpoint": i + "/logout", "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post"]}

    # -- HTTP --------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: Any, body: bytes
               ) -> tuple[int, bytes, list[tuple[str, str]]]:
        url = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(url.query))
        form = dict(urllib.parse.parse_qsl(body.decode())) if body else {}
        if self.down:
            return 503, b"down for maintenance\n", []
        route = url.path
        if route == "/.well-known/openid-configuration":
            return 200, json.dumps(self.discovery()).encode(), [("content-type",
                                                                  "application/json")]
        if route == "/jwks":
            return 200, json.dumps(self.jwks()).encode(), [("content-type",
                                                             "application/json")]
        if route == "/logout":
            self.seen["logout"].append(query)
            return 200, b"logged out at the provider\n", []
        request = Request(method, self.issuer + path, headers, query, form)
        with self.lock:
            if route == "/authorize":
                self.seen["authorize"].append(query)
                grant = self.server.get_consent_grant(request, end_user=USER)
                status, payload, extra = self.server.create_authorization_response(
                    request, grant_user=USER, grant=grant)
            elif route == "/token" and method == "POST":
                auth = "client_secret_basic" if (headers.get("authorization") or "").startswith(
                    "Basic ") else "client_secret_post" if "client_secret" in form else "none"
                self.seen["token"].append((form.get("grant_type"), auth))
                status, payload, extra = self.server.create_token_response(request)
            else:
                return 404, b"not found\n", []
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        return status, (payload or "").encode(), list(extra)

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        op = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                if op.hang and self.path.startswith("/.well-known/"):
                    time.sleep(30)
                    return
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, data, extra = op.answer(self.command, self.path, self.headers, body)
                self.send_response(status)
                for k, v in extra:
                    self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> Provider:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

