"""TrafficPolicy ``accessLog``: a Gateway's (or one listener's) access log settings.

The sink stays the command line's (``--access-log``: stdout, a file, OTLP); what a
Gateway chooses is what its requests' lines look like and which are written:
``format`` (``json``, ``text`` or ``text:TEMPLATE``, the ``--access-log-format``
values), ``filter`` (``all``, ``errors``, ``server-errors``), ``samplePercent``
(1-100) and ``disabled``. A field left out keeps the command line's value.

The line is written when the request ends, for every request a socket takes, before
and after routing (refused requests and failed TLS handshakes too): so only a Gateway or
one of its listeners can set it (a route target is reported Invalid). Several Gateway
listeners bound to one socket share its connections: the first listener's (by name)
settings apply there.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.policy.section import Section
from controller.schema.errors import FieldError
from controller.schema.nodes import Bool, Int, Str, obj
from kgw_l7.config import AccessLogPolicy
from kgw_l7.logformat import FILTERS, FormatError, parse_format


def _format_rule(value: str, path: str) -> Iterable[FieldError]:
    try:
        parse_format(value)
    except FormatError as exc:
        yield FieldError(path, str(exc))


def _at_least_one(value: dict, path: str) -> Iterable[FieldError]:
    if not value:
        yield FieldError(path, "must set disabled, format, filter or samplePercent")


SCHEMA = obj({
    "disabled": Bool(),
    "format": Str(min_len=1, max_len=4096, rules=(_format_rule,)),
    "filter": Str(enum=tuple(FILTERS)),
    "samplePercent": Int(1, 100),
}, rules=[_at_least_one])


def compile_access_log(value: dict, scope: str) -> AccessLogPolicy:
    flt = value.get("filter")
    pct = value.get("samplePercent")
    return AccessLogPolicy(disabled=bool(value.get("disabled", False)),
                           format=value.get("format"),
                           min_status=FILTERS[flt] if flt is not None else None,
                           sample=pct / 100.0 if pct is not None else None)


SECTION = Section("accessLog", SCHEMA, compile_access_log, "access_log", listener_only=True)
