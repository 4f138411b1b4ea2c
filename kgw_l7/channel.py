"""What the supervisor (``kgw_l7.plane``) and a worker process (``kgw_l7.worker``) say to
each other: the ``WorkerOptions`` a worker is started with, then frames on their
socketpair.

A module of its own, with nothing but the standard library under it (and
``kgw_l7.logformat``, standard library only), so that the
supervisor side never imports the per-request modules (the proxy, the parsers) to talk
to its workers.

The worker is started as ``python -m kgw_l7 worker --fd N --index I --options B64``
(``encode_options``), rather than with multiprocessing, so it never re-imports the
supervisor's main module. On the socketpair each frame is a 4-byte big-endian length and
a pickle; requests are ``(kind, seq, *args)`` and replies ``(seq, payload)``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import pickle
import struct
from dataclasses import dataclass
from typing import Any

from kgw_l7.logformat import DEFAULT_REDACT

#: Connections per backend endpoint per worker, idle and busy (Envoy's circuit breakers
#: default to 1024 connections per cluster).
MAX_CONNECTIONS_PER_ENDPOINT = 1024


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    access_log: str | None = None  # None = stdout, "off" = disabled, else a file path
    max_connections: int = 10000
    #: Keep-alive connections with no request for this long are closed.
    idle_timeout: float = 60.0
    #: A request header block must arrive within this time (slowloris protection).
    header_timeout: float = 10.0
    drain_timeout: float = 5.0
    log_level: int = logging.INFO
    #: A backend that sends nothing for this long while a response is awaited or being
    #: relayed is given up on (504, or the client connection cut mid-response); routes
    #: with a request or backend timeout use theirs. 0 disables it. (Envoy's default
    #: route timeout is 15 s too.)
    response_timeout: float = 15.0
    #: Keep serving a client that closed its sending side (FIN) instead of abandoning
    #: its request (nginx's proxy_ignore_client_abort).
    ignore_client_abort: bool = False
    #: Connections per backend endpoint per worker; a try beyond it gets 503 at once.
    max_upstream_connections: int = MAX_CONNECTIONS_PER_ENDPOINT
    #: --access-log-format: "json", "text" or "text:TEMPLATE" (kgw_l7.logformat).
    access_log_format: str = "json"
    #: The lowest response status logged (0: all; kgw_l7.logformat.FILTERS).
    access_log_min_status: int = 0
    #: The share of requests logged (after the status filter).
    access_log_sample: float = 1.0
    #: Request headers whose values are never logged (lower case).
    access_log_redact: tuple[str, ...] = DEFAULT_REDACT
    #: --tracing-endpoint: the OTLP/HTTP collector (else OTEL_EXPORTER_OTLP_ENDPOINT;
    #: neither: tracing is off). kgw_l7.tracing.
    tracing_endpoint: str | None = None
    #: --tracing-sample: the share of new traces sampled (parent-based; else
    #: OTEL_TRACES_SAMPLER/_ARG).
    tracing_sample: float | None = None
    #: How many workers the plane runs (circuit breaker limits are shared among them).
    workers: int = 1


def encode_options(options: WorkerOptions) -> str:
    """``options`` as one command-line argument."""
    return base64.b64encode(pickle.dumps(options)).decode()


def decode_options(arg: str) -> WorkerOptions:
    options = pickle.loads(base64.b64decode(arg))
    if not isinstance(options, WorkerOptions):
        raise ValueError(f"--options holds a {type(options).__name__}, not WorkerOptions")
    return options


def encode_frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!I", len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any:
    size = struct.unpack("!I", await reader.readexactly(4))[0]
    return pickle.loads(await reader.readexactly(size))
