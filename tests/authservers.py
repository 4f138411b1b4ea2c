"""External authorization services for the tests: a real HTTP one (Envoy's ext_authz HTTP
service contract, stdlib ``http.server``) and a real gRPC one (grpcio serving
``envoy.service.auth.v3.Authorization/Check`` from the ``xds-protos`` package).

Both decide the same way, by the request's Authorization header:

* ``Bearer good``: allowed, with ``x-user: alice`` (and ``x-auth-extra: 1``) for the backend;
* ``Bearer slow``: answered after ``SLOW`` seconds (allowed), to make the proxy time out;
* ``Bearer teapot``: denied 418 (a status and a header passed through to the client);
* anything else: denied 401 with ``www-authenticate: Bearer realm="test"`` and a body.

Each keeps what it was asked (``seen``), so a test can check what kgw sent. ``python -m
tests.authservers HTTP_PORT GRPC_PORT`` runs both (in a test's private host).
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW = 5.0
DENY_BODY = b"denied by the test auth service\n"


def _decide(authorization: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body): 200 allows."""
    if authorization == "Bearer good":
        return 200, [("x-user", "alice"), ("x-auth-extra", "1")], b""
    if authorization == "Bearer slow":
        time.sleep(SLOW)
        return 200, [("x-user", "slow")], b""
    if authorization == "Bearer teapot":
        return 418, [("x-why", "short and stout")], b"teapot\n"
    return 401, [("www-authenticate", 'Bearer realm="test"')], DENY_BODY


class HTTPAuth:
    """The HTTP service, on a thread. ``seen``: (method, path, headers, body) per check."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.seen.append((self.command, self.path,
                                   {k.lower(): v for k, v in self.headers.items()}, body))
                status, headers, out = _decide(self.headers.get("authorization") or "")
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                if self.command != "HEAD":
                    try:
                        self.wfile.write(out)
                    except OSError:
                        pass  # (the proxy gave up waiting: the point of "slow")

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a peer that gave up (timed out) is not a failure of the test

        self.server = Server((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GRPCAuth:
    """The gRPC service (grpcio). ``seen``: the CheckRequest messages."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        import grpc
        from envoy.service.auth.v3 import external_auth_pb2 as pb
        from envoy.service.auth.v3 import external_auth_pb2_grpc as pb_grpc
        from google.rpc import code_pb2

        self.seen: list[Any] = []
        outer = self

        class Servicer(pb_grpc.AuthorizationServicer):
            def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's name)
                outer.seen.append(request)
                headers = request.attributes.request.http.headers
                status, extra, body = _decide(headers.get("authorization", ""))
                resp = pb.CheckResponse()
                if status == 200:
                    resp.status.code = code_pb2.OK
                    for k, v in extra:
                        opt = resp.ok_response.headers.add()
                        opt.header.key, opt.header.value = k, v
                    resp.ok_response.headers_to_remove.append("x-strip-me")
                    return resp
                resp.status.code = code_pb2.PERMISSION_DENIED if status != 401 \
                    else code_pb2.UNAUTHENTICATED
                # (HttpStatus.code is an open enum: 418, which it does not name, is kept)
                resp.denied_response.status.code = status
                for k, v in extra:
                    opt = resp.denied_response.headers.add()
                    opt.header.key, opt.header.value = k, v
                resp.denied_response.body = body.decode()
                return resp

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_AuthorizationServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)


def main(argv: list[str]) -> None:
    http = HTTPAuth(int(argv[0]))
    grpc_ = GRPCAuth(int(argv[1]))
    print("ready", http.port, grpc_.port, flush=True)
    try:
        threading.Event().wait()
    finally:
        http.close()
        grpc_.close()


if __name__ == "__main__":
    main(sys.argv[1:])
