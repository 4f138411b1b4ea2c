"""gRPC fixtures for the gRPC proxy tests: a grpcio server of every call type, told by
each request what to do, the standard health service, and a client that returns status
codes instead of raising.

``tests/grpcsvc.proto`` (compiled when loaded, kgw_l7/protoc.py) defines service
``kgw.test.grpcsvc.Test``: Unary, ClientStream, ServerStream and Bidi. A ``Call`` message
asks for a payload echoed or ``response_size`` bytes (``pattern(n)``), ``count`` replies
``interval_ms`` apart (a long stream), a delay, a hang until the call ends, a final
status, trailing metadata; every ``Reply`` says what the server saw (messages and bytes
received with their SHA-256, ``:authority``, metadata, method, server name). Messages up
to ``MAX_MESSAGE`` (32 MiB: the 16 MiB the gateway must carry, with room) both ways.

The server (``GrpcTestServer``) runs in this process's threads; ``spawn_server`` runs
the same in a subprocess (``python -m tests.grpcsvc``), to be killed mid-stream. Each
finished call is recorded (``calls()``, ``wait_calls()``): method, authority, metadata,
messages in and out, and how it ended: ``ok``, ``failed:<CODE>`` (it answered that
status) or ``cancelled`` (the client, a deadline or a server stop ended it first).
The health service (grpcio-health-checking) answers SERVING for "" and the Test service
until ``set_serving(False)``.

Every wait is bounded: a hang lasts until the call ends or ``HANG_LIMIT_S`` (then
ABORTED), delays and intervals until the call ends.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kgw_l7 import protoc  # noqa: E402
from kgw_l7.echo.grpcecho import authority_of  # noqa: E402

PROTO = Path(__file__).with_name("grpcsvc.proto")
SERVICE = "kgw.test.grpcsvc.Test"
MAX_MESSAGE = 32 << 20
HANG_LIMIT_S = 60.0
CALL_TIMEOUT_S = 10.0
#: Message sizes past grpc's 4 MiB default; no HTTP proxy from the environment.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.enable_http_proxy", 0))
SERVER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.so_reuseport", 0))
_BLOCK = bytes(range(256)) * 256


def modules() -> tuple[Any, Any]:
    """The Test service's messages and stubs."""
    return protoc.load(PROTO)


def pattern(n: int) -> bytes:
    """The ``n`` bytes a reply of ``response_size`` n carries (0, 1, ... 255, 0, ...)."""
    whole, rest = divmod(n, len(_BLOCK))
    return _BLOCK * whole + _BLOCK[:rest]


@dataclass(frozen=True)
class CallRecord:
    """One finished call, as the server saw it."""

    method: str
    authority: str
    metadata: tuple[tuple[str, str], ...]
    outcome: str  # ok | failed:<CODE> | cancelled
    received: int
    received_bytes: int
    sent: int
    server: str

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.metadata if k == name]


class _Call:
    """Server-side state of one call."""

    def __init__(self, server: GrpcTestServer, method: str, context: grpc.ServicerContext) -> None:
        self.server = server
        self.method = f"/{SERVICE}/{method}"
        self.context = context
        self.authority = authority_of(context)
        self.metadata = tuple((k, base64.b64encode(v).decode() if isinstance(v, bytes) else v)
                              for k, v in context.invocation_metadata() or ())
        self.received = self.received_bytes = self.sent = 0
        self.sha = hashlib.sha256()
        self.ended = threading.Event()
        self.outcome: str | None = None
        self._lock = threading.Lock()
        context.add_callback(self._terminated)

    def take(self, msg: Any) -> None:
        self.received += 1
        self.received_bytes += len(msg.payload)
        self.sha.update(msg.payload)

    def reply(self, msg: Any, index: int) -> Any:
        pb = self.server.pb
        self.sent += 1
        return pb.Reply(payload=pattern(msg.response_size) if msg.response_size else msg.payload,
                        index=index,
                        received=self.received, received_bytes=self.received_bytes,
                        sha256=self.sha.hexdigest(),
                        server=self.server.name, method=self.method, authority=self.authority,
                        metadata=[pb.Metadata(key=k, value=v) for k, v in self.metadata])

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the call ends first (then False)."""
        return not self.ended.wait(seconds) if seconds > 0 else not self.ended.is_set()

    def behave(self, msg: Any) -> bool:
        """The message's delay and hang; False when the call ended meanwhile."""
        if msg.delay_ms and not self.wait(msg.delay_ms / 1000):
            return False
        if msg.hang:
            if self.ended.wait(HANG_LIMIT_S):
                return False
            self.finish(grpc.StatusCode.ABORTED,
                        f"hung for {HANG_LIMIT_S:.0f}s and the call did not end")
        return True

    def count(self, msg: Any) -> int:
        return msg.count or (0 if msg.fail_code else 1)

    def finish(self, code: grpc.StatusCode | None = None, details: str = "",
               trailers: Any = None) -> None:
        """End the call: OK (``code`` None), or abort with ``code``."""
        if trailers:
            self.context.set_trailing_metadata(tuple(trailers.items()))
        if code is None:
            self._settle("ok")
            return
        self._settle(f"failed:{code.name}")
        self.context.abort(code, details)

    def finish_as(self, msg: Any) -> None:
        codes = {c.value[0]: c for c in grpc.StatusCode}
        code = codes.get(msg.fail_code, grpc.StatusCode.UNKNOWN) if msg.fail_code else None
        self.finish(code, msg.fail_message, msg.trailers)

    def _settle(self, outcome: str) -> None:
        with self._lock:
            if self.outcome is None:
                self.outcome = outcome

    def _terminated(self) -> None:
        self._settle("cancelled")
        self.ended.set()
        self.server._record(self)


class GrpcTestServer:
    """The Test service and the health service on ``address:port`` (0: a free port)."""

    def __init__(self, name: str = "grpcsvc", address: str = "127.0.0.1", port: int = 0,
                 tls: tuple[bytes, bytes] | None = None, workers: int = 32) -> None:
        self.name = name
        self.pb, self.services = modules()
        self.host = address
        self.port = port
        self.tls = tls
        self._records: list[CallRecord] = []
        self._cond = threading.Condition()
        self.health = health.HealthServicer()
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers),
                                   options=SERVER_OPTIONS)
        self._server.add_generic_rpc_handlers((self._handler(),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> GrpcTestServer:
        bind = f"{self.host}:{self.port}"
        try:
            if self.tls:
                creds = grpc.ssl_server_credentials([(self.tls[1], self.tls[0])])
                self.port = self._server.add_secure_port(bind, creds)
            else:
                self.port = self._server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise OSError(f"grpcsvc {self.name}: cannot listen on {bind}: {exc}") from exc
        self._server.start()
        self.set_serving(True)
        return self

    def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in ("", SERVICE):
            self.health.set(service, status)

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; calls still running are cancelled after ``grace`` seconds."""
        self._server.stop(grace).wait(max(grace or 0, 0) + 5)

    def __enter__(self) -> GrpcTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the server saw --

    def _record(self, call: _Call) -> None:
        rec = CallRecord(call.method, call.authority, call.metadata, call.outcome or "cancelled",
                         call.received, call.received_bytes, call.sent, self.name)
        with self._cond:
            self._records.append(rec)
            self._cond.notify_all()

    def calls(self) -> list[CallRecord]:
        with self._cond:
            return list(self._records)

    def wait_calls(self, predicate: Callable[[CallRecord], bool] = lambda r: True, n: int = 1,
                   timeout: float = 10.0) -> list[CallRecord]:
        """The finished calls matching ``predicate`` once there are ``n`` of them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [r for r in self._records if predicate(r)]
                if len(found) >= n:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"grpcsvc {self.name}: {len(found)}/{n} matching calls "
                                       f"after {timeout}s: {self._records}")
                self._cond.wait(left)

    # -- the service --

    def _handler(self) -> grpc.GenericRpcHandler:
        des, ser = self.pb.Call.FromString, self.pb.Reply.SerializeToString
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary, des, ser),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream, des, ser),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream, des, ser),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi, des, ser)})

    def _unary(self, msg: Any, context: grpc.ServicerContext) -> Any:
        call = _Call(self, "Unary", context)
        call.take(msg)
        if not call.behave(msg):
            return self.pb.Reply()
        if msg.fail_code:
            call.finish_as(msg)
        reply = call.reply(msg, 0)
        call.finish_as(msg)
        return reply

    def _client_stream(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = _Call(self, "ClientStream", context)
        last = self.pb.Call()
        for msg in requests:
            call.take(msg)
            last = msg
        if not call.behave(last):
            return self.pb.Reply()
        if last.fail_code:
            call.finish_as(last)
        reply = call.reply(last, 0)
        call.finish_as(last)
        return reply

    def _stream(self, call: _Call, msg: Any, first: int) -> Iterator[Any]:
        for i in range(call.count(msg)):
            if i and msg.interval_ms and not call.wait(msg.interval_ms / 1000):
                return
            if call.ended.is_set():
                return
            yield call.reply(msg, first + i)

    def _server_stream(self, msg: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _Call(self, "ServerStream", context)
        call.take(msg)
        if not call.behave(msg):
            return
        yield from self._stream(call, msg, 0)
        if not call.ended.is_set():
            call.finish_as(msg)

    def _bidi(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        call = _Call(self, "Bidi", context)
        for msg in requests:
            call.take(msg)
            if not call.behave(msg):
                return
            yield from self._stream(call, msg, call.sent)
            if msg.fail_code or msg.trailers:
                call.finish_as(msg)
                if msg.fail_code:
                    return
        if not call.ended.is_set():
            call.finish()


# -- the client ---------------------------------------------------------------------------


@dataclass
class Result:
    """How a call ended and what came back (replies received before an error included)."""

    code: grpc.StatusCode
    details: str = ""
    replies: list[Any] = field(default_factory=list)
    initial_metadata: tuple[tuple[str, Any], ...] = ()
    trailing_metadata: tuple[tuple[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    @property
    def reply(self) -> Any:
        return self.replies[0] if self.replies else None


class GrpcTestClient:
    """A channel to the Test and health services; each call returns a Result."""

    def __init__(self, address: str, authority: str = "", root_certificates: bytes | None = None,
                 server_name: str = "", options: Iterable[tuple[str, Any]] = ()) -> None:
        self.pb, services = modules()
        opts = list(CHANNEL_OPTIONS) + list(options)
        if authority:
            opts.append(("grpc.default_authority", authority))
        if root_certificates is not None:
            if server_name:
                opts.append(("grpc.ssl_target_name_override", server_name))
            self.channel = grpc.secure_channel(
                address, grpc.ssl_channel_credentials(root_certificates), options=opts)
        else:
            self.channel = grpc.insecure_channel(address, options=opts)
        self.stub = services.TestStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def call(self, **fields: Any) -> Any:
        return self.pb.Call(**fields)

    def unary(self, msg: Any = None, metadata: Iterable[tuple[str, str]] = (),
              timeout: float = CALL_TIMEOUT_S, **fields: Any) -> Result:
        return self._unary_response(self.stub.Unary,
                                    msg if msg is not None else self.call(**fields), metadata,
                                    timeout)

    def client_stream(self, msgs: Iterable[Any], metadata: Iterable[tuple[str, str]] = (),
                      timeout: float = CALL_TIMEOUT_S) -> Result:
        return self._unary_response(self.stub.ClientStream, iter(msgs), metadata, timeout)

    def server_stream(self, msg: Any = None, metadata: Iterable[tuple[str, str]] = (),
                      timeout: float = CALL_TIMEOUT_S, **fields: Any) -> Result:
        return self._collect(self.stub.ServerStream(msg if msg is not None else self.call(**fields),
                                                    metadata=tuple(metadata) or None,
                                                    timeout=timeout))

    def bidi(self, msgs: Iterable[Any], metadata: Iterable[tuple[str, str]] = (),
             timeout: float = CALL_TIMEOUT_S) -> Result:
        return self._collect(
            self.stub.Bidi(iter(msgs), metadata=tuple(metadata) or None, timeout=timeout))

    def check(self, service: str = "", timeout: float = 5.0) -> str:
        """The health service's answer for ``service`` (SERVING, NOT_SERVING...), or the
        status code's name when the check itself fails."""
        try:
            resp = self.health.Check(health_pb2.HealthCheckRequest(service=service),
                                     timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GrpcTestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _unary_response(method: Any, request: Any, metadata: Iterable[tuple[str, str]],
                        timeout: float) -> Result:
        try:
            reply, call = method.with_call(request, metadata=tuple(metadata) or None,
                                           timeout=timeout)
        except grpc.RpcError as exc:
            return Result(exc.code(), exc.details() or "", [], tuple(exc.initial_metadata() or ()),
                          tuple(exc.trailing_metadata() or ()))
        return Result(grpc.StatusCode.OK, "", [reply], tuple(call.initial_metadata() or ()),
                      tuple(call.trailing_metadata() or ()))

    @staticmethod
    def _collect(call: Any) -> Result:
        replies = []
        try:
            for reply in call:
                replies.append(reply)
        except grpc.RpcError as exc:
            return Result(exc.code(), exc.details() or "", replies,
                          tuple(call.initial_metadata() or ()),
                          tuple(call.trailing_metadata() or ()))
        return Result(grpc.StatusCode.OK, "", replies, tuple(call.initial_metadata() or ()),
                      tuple(call.trailing_metadata() or ()))


# -- in a subprocess ----------------------------------------------------------------------


@dataclass
class SpawnedServer:
    """``python -m tests.grpcsvc`` running: ``kill()`` is a backend dying (SIGKILL)."""

    proc: subprocess.Popen[bytes]
    address: str
    name: str

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn_server(log: Path, name: str = "grpcsvc", address: str = "127.0.0.1", port: int = 0,
                 timeout: float = 15.0) -> SpawnedServer:
    """Start the server in a subprocess (output to ``log``); returns once it accepts."""
    if port == 0:
        with socket.socket() as s:
            s.bind((address, 0))
            port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.grpcsvc", "--name", name, "--address",
                             address,
                             "--port", str(port)], cwd=ROOT, stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"grpcsvc {name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return SpawnedServer(proc, f"{address}:{port}", name)
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(5)
                raise RuntimeError(f"grpcsvc {name} did not listen on {address}:{port} "
                                   f"within {timeout:.0f}s") from None
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.grpcsvc", description=__doc__.splitlines()[0])
    p.add_argument("--name", default="grpcsvc")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    server = GrpcTestServer(args.name, args.address, args.port).start()
    print(f"grpcsvc {args.name} listening on {server.address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    server.stop(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
