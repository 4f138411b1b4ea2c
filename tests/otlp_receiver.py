"""Real OTLP receivers for the tests: an HTTP server decoding each
``ExportTraceServiceRequest`` (``/v1/traces``) into plain span records and each
``ExportLogsServiceRequest`` (``/v1/logs``) into log records (protobuf,
opentelemetry-proto), and a gRPC server implementing the collector's TraceService
(``GrpcReceiver``). Either can also fail (500, or gRPC INTERNAL) or hang, as a broken
collector does."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest, ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent: str
    name: str
    kind: int  # 2 SERVER, 3 CLIENT
    attrs: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: int  # 0 UNSET, 2 ERROR
    service: str
    start: int
    end: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LogRecord:
    body: Any  # a str, or a dict for a map body
    severity: str
    service: str
    timestamp: int


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _spans(req: ExportTraceServiceRequest) -> list[Span]:
    got = []
    for rs in req.resource_spans:
        service = _attrs(rs.resource.attributes).get("service.name", "")
        for ss in rs.scope_spans:
            for s in ss.spans:
                got.append(Span(
                    s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                    s.name, s.kind, _attrs(s.attributes),
                    [(e.name, _attrs(e.attributes)) for e in s.events],
                    s.status.code, service, s.start_time_unix_nano,
                    s.end_time_unix_nano))
    return got


class Receiver:
    """``mode``: "ok", "fail" (500 to every export) or "hang" (never answers in time)."""

    def __init__(self, address: tuple[str, int], mode: str = "ok") -> None:
        self.mode = mode
        self.spans: list[Span] = []
        self.logs: list[LogRecord] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests += 1
                if receiver.mode == "hang":
                    time.sleep(30)
                    return
                if receiver.mode == "fail" or self.path not in ("/v1/traces", "/v1/logs") or \
                        self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/v1/logs":
                    self._logs(body)
                    return
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                got = _spans(req)
                with receiver.lock:
                    receiver.spans.extend(got)
                data = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _logs(self, body: bytes) -> None:
                req = ExportLogsServiceRequest()
                req.ParseFromString(body)
                got = []
                for rl in req.resource_logs:
                    service = _attrs(rl.resource.attributes).get("service.name", "")
                    for sl in rl.scope_logs:
                        for r in sl.log_records:
                            got.append(LogRecord(_value(r.body), r.severity_text, service,
                                                 r.time_unix_nano))
                with receiver.lock:
                    receiver.logs.extend(got)
                self._answer(ExportLogsServiceResponse().SerializeToString())

            def _answer(self, data: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(address, Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


class GrpcReceiver:
    """The OTLP/gRPC trace receiver: a grpcio server with opentelemetry-proto's
    ``TraceService`` (``Export``), its requests decoded as ``Receiver``'s. ``mode`` as
    ``Receiver``'s ("fail": INTERNAL to every export, which the exporter does not retry)."""

    def __init__(self, address: tuple[str, int], mode: str = "ok") -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self.mode = mode
        self.spans: list[Span] = []
        self.requests = 0
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()
        self._released = threading.Event()
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: ExportTraceServiceRequest,  # noqa: N802 (the proto's)
                       context: Any) -> ExportTraceServiceResponse:
                with receiver.lock:
                    receiver.requests += 1
                    receiver.metadata.append(dict(context.invocation_metadata()))
                if receiver.mode == "hang":
                    receiver._released.wait(30)
                    context.abort(grpc.StatusCode.UNAVAILABLE, "hung")
                if receiver.mode == "fail":
                    context.abort(grpc.StatusCode.INTERNAL, "refused")
                got = _spans(request)
                with receiver.lock:
                    receiver.spans.extend(got)
                return ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port(f"{address[0]}:{address[1]}")
        if not self.port:
            raise OSError(f"cannot listen on {address[0]}:{address[1]}")

    def start(self) -> GrpcReceiver:
        self.server.start()
        return self

    def close(self) -> None:
        self._released.set()
        self.server.stop(grace=0).wait(5)

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]
