"""TrafficPolicy ``tracing``: a Gateway's (or one listener's) OpenTelemetry settings.

The names are Envoy Gateway's where it has them: ``samplingRate`` (a percentage, 0-100)
or ``samplingFraction`` (``numerator``/``denominator``, for less than 1%), ``customTags``
(span attributes: a ``Literal`` value or a ``RequestHeader``'s, with a ``defaultValue``
when the request has none); ``provider.endpoint`` is the collector: with
``provider.protocol`` ``http/protobuf`` (the default) its OTLP/HTTP URL (``/v1/traces`` is
added unless given), with ``grpc`` its OTLP/gRPC address (``http://`` plaintext,
``https://`` TLS, no path); ``serviceName`` and ``resourceAttributes``
the resource its spans are exported under. ``disabled: true`` turns tracing off for the
target when the command line turned it on.

A trace starts with the request, before routing (refused requests are spans too), so
only a Gateway or one of its listeners can set it (a route target is reported Invalid),
and only on HTTP and HTTPS listeners (LISTENER_SECTION_PROTOCOLS). Without the section a
Gateway's requests use the command line's ``--tracing-*`` / ``OTEL_*`` settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from controller.policy.section import Section
from controller.schema.errors import FieldError
from controller.schema.nodes import Bool, Int, MapOf, Str, join, obj
from kgw_l7.config import SpanTag, TracingPolicy
from kgw_l7.tracing_config import GRPC, HTTP_PROTOBUF, PROTOCOLS, traces_url

#: A header name as HTTP/2 sends it (lower case token characters).
_HEADER = r"^[a-z0-9!#$%&'*+.^_`|~-]+$"
#: An attribute key (OTel: a non-empty string; kept printable and short here).
_KEY = r"^[A-Za-z0-9._/-]+$"


def _endpoint_rule(value: str, path: str) -> Iterable[FieldError]:
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        yield FieldError(path, f"not a URL: {exc}")
        return
    if url.scheme not in ("http", "https") or not url.hostname:
        yield FieldError(path, "must be an http:// or https:// URL naming a host (the OTLP "
                               "collector, e.g. http://otel-collector:4318, or with protocol "
                               "grpc http://otel-collector:4317)")
    elif url.query or url.fragment:
        yield FieldError(path, "must not have a query or a fragment")


def _tag_rule(value: dict, path: str) -> Iterable[FieldError]:
    kind = value.get("type")
    wants = {"Literal": "literal", "RequestHeader": "requestHeader"}
    for k, field in wants.items():
        if k == kind and field not in value:
            yield FieldError(join(path, field), f"required when type is {k}")
        elif k != kind and field in value:
            yield FieldError(join(path, field), f"only allowed when type is {k}")


def _provider_rule(value: dict, path: str) -> Iterable[FieldError]:
    endpoint = value.get("endpoint")
    if value.get("protocol") == GRPC and isinstance(endpoint, str):
        try:
            has_path = urlsplit(endpoint).path not in ("", "/")
        except ValueError:
            return  # (said by the endpoint's own rule)
        if has_path:
            yield FieldError(join(path, "endpoint"), "with protocol grpc, the collector's "
                             "address has no path (scheme, host and port, e.g. "
                             "http://otel-collector:4317)")


def _tracing_rule(value: dict, path: str) -> Iterable[FieldError]:
    if not value.get("disabled") and "provider" not in value:
        yield FieldError(join(path, "provider"), "required unless disabled is true")
    if "samplingRate" in value and "samplingFraction" in value:
        yield FieldError(path, "set samplingRate or samplingFraction, not both")
    frac = value.get("samplingFraction")
    if isinstance(frac, dict) and isinstance(frac.get("numerator"), int) \
            and isinstance(frac.get("denominator"), int) \
            and frac["numerator"] > frac["denominator"]:
        yield FieldError(join(path, "samplingFraction"),
                         "numerator must not exceed denominator")


TAG = obj({
    "type": Str(enum=("Literal", "RequestHeader")),
    "literal": obj({"value": Str(max_len=1024)}, required=["value"]),
    "requestHeader": obj({"name": Str(min_len=1, max_len=256, pattern=_HEADER,
                                      pattern_hint="a lower case header name"),
                          "defaultValue": Str(max_len=1024)}, required=["name"]),
}, required=["type"], rules=[_tag_rule])

SCHEMA = obj({
    "disabled": Bool(),
    "provider": obj({"endpoint": Str(min_len=1, max_len=2048, rules=(_endpoint_rule,)),
                     "protocol": Str(enum=PROTOCOLS)},
                    required=["endpoint"], rules=[_provider_rule]),
    "samplingRate": Int(0, 100),
    "samplingFraction": obj({"numerator": Int(0), "denominator": Int(1)},
                            required=["numerator", "denominator"]),
    "serviceName": Str(min_len=1, max_len=256),
    "resourceAttributes": MapOf(Str(max_len=1024), keys=Str(min_len=1, max_len=256,
                                                            pattern=_KEY),
                                max_props=32),
    "customTags": MapOf(TAG, keys=Str(min_len=1, max_len=256, pattern=_KEY), max_props=32),
}, rules=[_tracing_rule])


def compile_tracing(value: dict, scope: str) -> TracingPolicy:
    if value.get("disabled"):
        return TracingPolicy(disabled=True)
    frac = value.get("samplingFraction")
    if frac is not None:
        ratio = frac["numerator"] / frac["denominator"]
    else:
        ratio = value.get("samplingRate", 100) / 100.0
    tags = []
    for name, tag in sorted(value.get("customTags", {}).items()):
        if tag["type"] == "Literal":
            tags.append(SpanTag(name, None, tag["literal"]["value"]))
        else:
            h = tag["requestHeader"]
            tags.append(SpanTag(name, h["name"], h.get("defaultValue")))
    protocol = value["provider"].get("protocol", HTTP_PROTOBUF)
    return TracingPolicy(
        endpoint=traces_url(value["provider"]["endpoint"], protocol), ratio=ratio,
        service_name=value.get("serviceName"),
        resource=tuple(sorted(value.get("resourceAttributes", {}).items())),
        tags=tuple(tags), protocol=protocol)


SECTION = Section("tracing", SCHEMA, compile_tracing, "tracing", listener_only=True)
