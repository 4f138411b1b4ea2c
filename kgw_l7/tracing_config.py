"""Tracing's settings: the ``--tracing-*`` flags and the standard ``OTEL_*`` environment
variables, resolved once (standard library only: the supervisor checks them before any
worker starts, and the CLI parses the flags, without importing the per-request modules
or the OpenTelemetry SDK)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

#: OTEL_EXPORTER_OTLP_PROTOCOL values kgw exports with (http/json it does not).
PROTOCOLS = ("http/protobuf", "grpc")
HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"

SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")
_SAMPLERS = SAMPLERS


class TracingConfigError(ValueError):
    """A tracing setting that cannot be used (named with where it came from)."""


@dataclass(frozen=True, slots=True)
class TracingSettings:
    #: http/protobuf: the OTLP/HTTP traces URL (ending in /v1/traces unless given whole by
    #: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); grpc: the collector's http:// (plaintext) or
    #: https:// (TLS) address, as given.
    url: str
    sampler: str
    ratio: float
    #: Seconds an export may take (OTEL_EXPORTER_OTLP_TIMEOUT, in ms; default 10 s).
    timeout: float
    #: "http/protobuf" (the specification's default) or "grpc"
    #: (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL).
    protocol: str = HTTP_PROTOBUF


def resolve(endpoint: str | None, sample: float | None,
            env: Mapping[str, str] | None = None) -> TracingSettings | None:
    """The tracing settings from the flags and the ``OTEL_*`` environment; None when no
    endpoint is configured (or OTEL_SDK_DISABLED=true / OTEL_TRACES_EXPORTER=none)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return None
    protocol = parse_protocol(env)
    url = endpoint
    if not url:
        url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()  # (as given)
        if not url:
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            if not base:
                return None
            url = traces_url(base, protocol)
    else:
        url = traces_url(url, protocol)
    if not url.startswith(("http://", "https://")):
        raise TracingConfigError(f"tracing endpoint {url!r}: not an http:// or https:// URL")
    if protocol == GRPC and urlsplit(url).path not in ("", "/"):
        raise TracingConfigError(f"tracing endpoint {url!r}: a gRPC collector's address has "
                                 f"no path (OTLP over gRPC: scheme, host and port)")
    if sample is not None:
        sampler, ratio = "parentbased_traceidratio", sample
    else:
        sampler = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        if sampler not in _SAMPLERS:
            raise TracingConfigError(f"OTEL_TRACES_SAMPLER={sampler!r}: kgw knows "
                                     f"{', '.join(_SAMPLERS)}")
        arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        ratio = 1.0
        if sampler.endswith("traceidratio") and arg:
            ratio = parse_ratio(arg, "OTEL_TRACES_SAMPLER_ARG")
    timeout = 10.0
    t = env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or env.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    if t:
        try:
            timeout = float(t) / 1000.0  # (milliseconds, as the specification says)
        except ValueError:
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_TIMEOUT={t!r}: not a number "
                                     f"of milliseconds") from None
    return TracingSettings(url, sampler, ratio, timeout, protocol)


def parse_protocol(env: Mapping[str, str]) -> str:
    """The OTLP protocol of trace exports: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
    OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf (the specification's default)."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(name, "").strip().lower()
        if value:
            if value not in PROTOCOLS:
                raise TracingConfigError(f"{name}={value!r}: kgw exports traces with "
                                         f"{' or '.join(PROTOCOLS)}")
            return value
    return HTTP_PROTOBUF


def traces_url(endpoint: str, protocol: str = HTTP_PROTOBUF) -> str:
    """Where a collector at ``endpoint`` takes traces: over OTLP/HTTP its ``/v1/traces``
    (added unless given, as for OTEL_EXPORTER_OTLP_ENDPOINT); over gRPC the address itself
    (the service and method name the path)."""
    if protocol == GRPC or endpoint.rstrip("/").endswith("/v1/traces"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


def parse_ratio(value: str, what: str = "--tracing-sample") -> float:
    try:
        r = float(value)
    except ValueError:
        raise TracingConfigError(f"{what} {value!r}: not a number") from None
    if not 0.0 <= r <= 1.0:
        raise TracingConfigError(f"{what} {value!r}: must be between 0 and 1")
    return r


