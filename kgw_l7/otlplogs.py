"""The access log's OTLP sink: its lines exported as OpenTelemetry log records over
OTLP/HTTP (protobuf), with the official SDK's exporter.

``--access-log otlp`` sends to the endpoint of the standard variables
(``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` as given, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` +
``/v1/logs``); ``--access-log otlp:URL`` to ``URL`` (``/v1/logs`` added unless it ends
so). ``logs_url`` resolves it with the standard library only, so the supervisor refuses
a missing or malformed endpoint before any worker starts.

The sink runs in the access log's writer thread (``kgw_l7.accesslog``), never on the
event loop: a collector that is slow, down or refusing stalls only that thread, and the
writer's bound turns the backlog into counted drops. One record per line: the body is
the line's JSON object as a map (``json``; fields with no value left out) or the line
as a string (``text``), the timestamp is the export's (the line holds the request's
start), severity INFO, the resource ``service.name`` kgw unless ``OTEL_SERVICE_NAME`` or
``OTEL_RESOURCE_ATTRIBUTES`` say otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

#: ``--access-log`` values that name this sink.
PREFIX = "otlp"


class OtlpLogsError(ValueError):
    """An OTLP logs endpoint that cannot be used (the message says which and why)."""


def is_otlp(target: str | None) -> bool:
    return target is not None and (target == PREFIX or target.startswith(PREFIX + ":"))


def logs_url(target: str, env: Mapping[str, str] | None = None) -> str:
    """The OTLP/HTTP logs URL for ``otlp`` or ``otlp:URL``; raises OtlpLogsError."""
    env = os.environ if env is None else env
    url = target[len(PREFIX) + 1:].strip() if target != PREFIX else ""
    if url:
        if not url.rstrip("/").endswith("/v1/logs"):
            url = url.rstrip("/") + "/v1/logs"
    else:
        url = env.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "").strip()  # (as given)
        if not url:
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            if not base:
                raise OtlpLogsError(
                    "--access-log otlp: no collector named (give otlp:URL, or set "
                    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT)")
            url = base.rstrip("/") + "/v1/logs"
    if not url.startswith(("http://", "https://")):
        raise OtlpLogsError(f"access log OTLP endpoint {url!r}: not an http:// or https:// URL")
    return url


def timeout_seconds(env: Mapping[str, str] | None = None) -> float:
    """``OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`` / ``OTEL_EXPORTER_OTLP_TIMEOUT`` (ms); 10 s."""
    env = os.environ if env is None else env
    t = env.get("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    if t:
        try:
            return max(0.1, float(t) / 1000.0)
        except ValueError:
            raise OtlpLogsError(f"OTEL_EXPORTER_OTLP_TIMEOUT={t!r}: not a number of "
                                f"milliseconds") from None
    return 10.0


def _body(line: bytes, structured: bool) -> Any:
    text = line.decode("utf-8", "replace").rstrip("\n")
    if structured:
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        return {k: v for k, v in obj.items() if v is not None}
    return text


class OtlpLogSink:
    """Exports lines as log records (see the module docstring). ``write`` raises OSError
    when the collector did not take them, so the writer counts them as it counts a
    failed file write."""

    def __init__(self, url: str, structured: bool, timeout: float | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        # The exporter logs every failed batch; the access log says it once.
        for name in ("opentelemetry.exporter.otlp.proto.http._log_exporter",
                     "opentelemetry.exporter.otlp.proto.http",
                     "opentelemetry.exporter.otlp.common"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.url = url
        self.structured = structured
        attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "kgw"}
        self._resource = Resource.create(attrs)
        self._scope = InstrumentationScope("kgw.access_log")
        self._exporter = OTLPLogExporter(
            endpoint=url, timeout=timeout if timeout is not None else timeout_seconds())

    def write(self, lines: list[bytes]) -> None:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        now = time.time_ns()
        batch = [ReadableLogRecord(
            LogRecord(timestamp=now, observed_timestamp=now, severity_text="INFO",
                      severity_number=SeverityNumber.INFO, body=_body(line, self.structured)),
            self._resource, self._scope) for line in lines]
        try:
            result = self._exporter.export(batch)
        except Exception as exc:  # noqa: BLE001 — the writer reports it as a failed write
            raise OSError(f"OTLP export to {self.url} failed: {exc}") from exc
        if result is not LogRecordExportResult.SUCCESS:
            raise OSError(f"the collector at {self.url} did not take the batch "
                          f"(refused, failed or did not answer in time)")

    def close(self) -> None:
        try:
            self._exporter.shutdown()
        except Exception:  # noqa: BLE001,S110 — shutting down: nothing left to report to
            pass
