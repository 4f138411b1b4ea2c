"""``kgw echo --grpc-port``: the gRPC echo of the conformance suite's echo backend
(echo-basic with GRPC_ECHO_SERVER set), served by grpcio.

Service ``gateway_api_conformance.echo_basic.grpcecho.GrpcEcho`` (``grpcecho.proto``
beside this file, compiled when loaded): ``Echo`` and ``EchoTwo`` answer an
``EchoResponse`` whose assertions carry the fully qualified method, the request's
metadata (``:authority`` included, as grpc-go reports it; binary ``-bin`` values in
base64, their wire form), the ``:authority``, the pod context (NAMESPACE, INGRESS_NAME,
SERVICE_NAME, POD_NAME) and, over TLS, the TLS facts; ``EchoThree`` is not implemented
(UNIMPLEMENTED), on purpose.

Clear text on the gRPC port (h2c with prior knowledge, as grpc servers speak it). With a
certificate and key, the same service over TLS on the TLS port. grpcio's TLS does not
tell a handler the server name, protocol version, cipher or ALPN of its connection, which
echo-basic reports, so TLS is terminated by Python's ssl in front of a second grpcio
server listening on a private loopback port: each TLS connection is piped to it, and the
facts of the handshake are looked up by the piped connection's source port (the handler's
``context.peer()``). Like grpc-go servers, the TLS port requires ALPN ``h2``: a client
that does not negotiate it is disconnected after the handshake (logged).

Every RPC prints ``Received over plaintext|TLS: <method> (<peer>)`` unless quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import sys
import threading
from pathlib import Path
from collections.abc import Callable
from typing import Any

import grpc

PROTO = Path(__file__).with_name("grpcecho.proto")
SERVICE = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"
#: Threads per grpcio server: enough for the conformance weighted test's 10 concurrent
#: calls, each answered at once.
WORKERS = 16
TLS_HANDSHAKE_TIMEOUT_S = 10.0
PIPE_CHUNK = 65536


def load() -> tuple[Any, Any]:
    """The grpcecho messages and services modules (raises protoc.ProtoError)."""
    from kgw_l7 import protoc

    return protoc.load(PROTO)


def authority_of(context: Any) -> str:
    """The call's ``:authority``. grpcio has no public accessor for it (handler call
    details carry the method and the metadata only; the C core keeps the authority in
    the details of a call to a generic handler): read from there, '' if a grpcio release
    moves it. Tests check that the authority a client sends is the one reported."""
    try:
        host = context._rpc_event.call_details.host
    except AttributeError:
        return ""
    return host.decode("latin-1") if isinstance(host, bytes) else str(host or "")


def peer_port(peer: str) -> int | None:
    """The port of a grpcio peer string ("ipv4:127.0.0.1:5555", "ipv6:[::1]:5555")."""
    _, sep, port = peer.rpartition(":")
    return int(port) if sep and port.isdigit() else None


class GrpcEchoServer:
    """What every call reports, and the TLS facts of the piped TLS connections."""

    def __init__(self, pod: str, namespace: str, service: str, ingress: str,
                 quiet: bool = False) -> None:
        self.pb, self.services = load()
        self.context = self.pb.Context(namespace=namespace, ingress=ingress,
                                       service_name=service, pod=pod)
        self.quiet = quiet
        self._lock = threading.Lock()
        #: source port of a piped connection -> the TLS facts of its client connection
        self._tls: dict[int, Any] = {}

    def remember_tls(self, port: int, facts: Any) -> None:
        with self._lock:
            self._tls[port] = facts

    def forget_tls(self, port: int) -> None:
        with self._lock:
            self._tls.pop(port, None)

    def tls_of(self, peer: str) -> Any:
        port = peer_port(peer)
        with self._lock:
            return self._tls.get(port) if port is not None else None

    def answer(self, method: str, context: Any, tls: bool) -> Any:
        peer = context.peer()
        if not self.quiet:
            print(f"Received over {'TLS' if tls else 'plaintext'}: /{SERVICE}/{method} ({peer})",
                  flush=True)
        authority = authority_of(context)
        headers = [self.pb.Header(key=":authority", value=authority)] if authority else []
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, bytes):
                value = base64.b64encode(value).decode()
            headers.append(self.pb.Header(key=key, value=value))
        assertions = self.pb.Assertions(fully_qualified_method=f"/{SERVICE}/{method}",
                                        headers=headers, authority=authority,
                                        context=self.context)
        if tls:
            facts = self.tls_of(peer)
            if facts is None:  # the pipe registers before it forwards a byte: cannot happen
                context.abort(grpc.StatusCode.INTERNAL,
                              f"no TLS facts for the piped connection {peer}")
            assertions.tls_assertions.CopyFrom(facts)
        return self.pb.EchoResponse(assertions=assertions, request=self.pb.EchoRequest())


def handler(server: GrpcEchoServer, tls: bool) -> Any:
    """The GrpcEcho service as grpcio's generic handler: Echo and EchoTwo echo;
    EchoThree answers UNIMPLEMENTED as grpc-go's generated base does. (Not the generated
    ``add_GrpcEchoServicer_to_server``: it registers the methods with grpc's core, whose
    registered calls do not carry the ``:authority``.)"""
    pb = server.pb

    def method(name: str) -> Any:
        def call(request: Any, context: Any) -> Any:
            return server.answer(name, context, tls)
        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=pb.EchoRequest.FromString,
            response_serializer=pb.EchoResponse.SerializeToString)

    def unimplemented(request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "method EchoThree not implemented")

    return grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": method("Echo"), "EchoTwo": method("EchoTwo"),
        "EchoThree": grpc.unary_unary_rpc_method_handler(unimplemented,
                                                         request_deserializer=pb.EchoRequest.FromString,
                                                         response_serializer=pb.EchoResponse.SerializeToString)})


def grpc_server(server: GrpcEchoServer, address: str, tls: bool) -> tuple[Any, int]:
    """A started grpcio server for the service on ``address`` (port 0: any); the port."""
    # no SO_REUSEPORT (grpcio sets it by default): a second server on a port must fail,
    # not share it unseen
    s = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS),
                    options=[("grpc.so_reuseport", 0)])
    s.add_generic_rpc_handlers((handler(server, tls),))
    try:
        port = s.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio raises it when the port cannot be bound
        raise OSError(f"gRPC echo: cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise OSError(f"gRPC echo: cannot listen on {address}")
    s.start()
    return s, port


def tls_facts(server: GrpcEchoServer, sslobj: Any) -> Any:
    from kgw_l7.echo import peer_certificates

    cipher = sslobj.cipher()
    return server.pb.TLSAssertions(
        version=sslobj.version() or "", negotiated_protocol=sslobj.selected_alpn_protocol() or "",
        server_name=getattr(sslobj, "_kgw_sni", "") or "", cipher_suite=cipher[0] if cipher else "",
        peer_certificates=peer_certificates(sslobj))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(PIPE_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def tls_front(server: GrpcEchoServer, inner: tuple[str, int], log: Callable[[str], None]
              ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """The connection handler of the TLS port: check ALPN, connect to the private
    grpcio server, register the handshake's facts under the piped connection's source
    port, then pipe both ways until either side closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        peer = writer.get_extra_info("peername")
        if sslobj is None or sslobj.selected_alpn_protocol() != "h2":
            alpn = sslobj.selected_alpn_protocol() if sslobj else None
            log(f"TLS connection from {peer} closed: ALPN {alpn!r} "
                "is not h2 (gRPC over TLS needs it)")
            writer.close()
            return
        try:
            in_reader, in_writer = await asyncio.wait_for(asyncio.open_connection(*inner), 5.0)
        except (TimeoutError, OSError) as exc:
            log(f"TLS connection from {peer} closed: the gRPC server is unreachable: {exc}")
            writer.close()
            return
        port = in_writer.get_extra_info("sockname")[1]
        server.remember_tls(port, tls_facts(server, sslobj))
        try:
            await asyncio.gather(_pipe(reader, in_writer), _pipe(in_reader, writer))
        finally:
            server.forget_tls(port)

    return handle


async def serve(args: argparse.Namespace) -> None:
    """gRPC mode: the service in clear text on ``grpc_port`` and, with a certificate and
    key, over TLS on ``tls_port``; until cancelled."""
    server = GrpcEchoServer(args.pod, args.namespace, args.service, args.ingress, args.quiet)
    servers = []
    try:
        plain, _ = grpc_server(server, f"{_host(args.address)}:{args.grpc_port}", tls=False)
        servers.append(plain)
        print(f"plaintext server listening at {args.address}:{args.grpc_port}", flush=True)
        front = None
        if args.tls_cert and args.tls_key:
            from kgw_l7.echo import _tls_context

            private, inner_port = grpc_server(server, "127.0.0.1:0", tls=True)
            servers.append(private)
            ctx = _tls_context(args.tls_cert, args.tls_key, ["h2"])
            front = await asyncio.start_server(tls_front(server, ("127.0.0.1", inner_port), _log),
                                               args.address, args.tls_port, ssl=ctx,
                                               reuse_address=True,
                                               ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
            print(f"secure server listening at {args.address}:{args.tls_port}", flush=True)
        if front is not None:
            async with front:
                await front.serve_forever()
        else:
            await asyncio.Future()
    finally:
        for s in servers:
            s.stop(None)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
