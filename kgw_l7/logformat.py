"""Access log formats, parsed: what ``--access-log-format`` says, checked at start-up.

Standard library only, so the supervisor (``controller.serve``) can refuse a bad format
before any worker starts; the workers compile the parsed format into a formatter
(``kgw_l7.accesslog``).

Two formats:

* ``json`` (the default): one JSON object per line with the fields of ``JSON_FIELDS``,
  in that order (their names are stable: dashboards and log pipelines key on them);
* ``text:TEMPLATE``: Envoy's command operators (``%RESPONSE_CODE%``,
  ``%REQ(USER-AGENT)%``...) in literal text; ``text`` alone is ``TEXT_DEFAULT``
  (Envoy's default format, less the headers kgw does not have).

An operator kgw does not know is an error naming it and its position in the template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Operator codes (kgw_l7.accesslog switches on them).
LITERAL = 0
START_TIME = 1
METHOD = 2
PATH = 3
PROTOCOL = 4
RESPONSE_CODE = 5
RESPONSE_FLAGS = 6
RESPONSE_CODE_DETAILS = 7
LISTENER = 8
BYTES_RECEIVED = 9
BYTES_SENT = 10
DURATION = 11
UPSTREAM_HOST = 12
REQUEST_ID = 13
AUTHORITY = 14
ROUTE_NAME = 15
DOWNSTREAM_REMOTE_ADDRESS = 16
DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT = 17
HEADER = 18      # a request header, by name (lower case)
REDACTED = 19    # a request header named in the redaction list: "[redacted]" if present

#: Envoy operators without arguments -> code.
OPERATORS = {
    "START_TIME": START_TIME,
    "PROTOCOL": PROTOCOL,
    "RESPONSE_CODE": RESPONSE_CODE,
    "RESPONSE_FLAGS": RESPONSE_FLAGS,
    "RESPONSE_CODE_DETAILS": RESPONSE_CODE_DETAILS,
    "BYTES_RECEIVED": BYTES_RECEIVED,
    "BYTES_SENT": BYTES_SENT,
    "DURATION": DURATION,
    "UPSTREAM_HOST": UPSTREAM_HOST,
    "ROUTE_NAME": ROUTE_NAME,
    "DOWNSTREAM_REMOTE_ADDRESS": DOWNSTREAM_REMOTE_ADDRESS,
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
    "LISTENER_NAME": LISTENER,
}

#: %REQ(...)% names with a value of their own: the pseudo-headers, and X-Request-Id (the
#: id kgw forwards, the client's or the one it made up).
REQ_SPECIAL = {
    ":method": METHOD,
    ":path": PATH,
    ":authority": AUTHORITY,
    "x-request-id": REQUEST_ID,
}

#: The ``json`` format: field name -> operator, in line order. The names are part of
#: kgw's interface (README, "Access log").
JSON_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("start_time", START_TIME, ""),
    ("method", METHOD, ""),
    ("path", PATH, ""),
    ("protocol", PROTOCOL, ""),
    ("response_code", RESPONSE_CODE, ""),
    ("response_flags", RESPONSE_FLAGS, ""),
    ("response_code_details", RESPONSE_CODE_DETAILS, ""),
    ("listener", LISTENER, ""),
    ("bytes_received", BYTES_RECEIVED, ""),
    ("bytes_sent", BYTES_SENT, ""),
    ("duration", DURATION, ""),
    ("upstream_host", UPSTREAM_HOST, ""),
    ("x_forwarded_for", HEADER, "x-forwarded-for"),
    ("user_agent", HEADER, "user-agent"),
    ("request_id", REQUEST_ID, ""),
    ("authority", AUTHORITY, ""),
    ("route_name", ROUTE_NAME, ""),
    ("downstream_remote_address", DOWNSTREAM_REMOTE_ADDRESS, ""),
)

TEXT_DEFAULT = ('[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
                '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
                '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
                '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"')

#: Header values never written (``--access-log-redact`` adds none: this is the floor).
DEFAULT_REDACT = ("authorization", "cookie", "set-cookie", "proxy-authorization")

FILTERS = {"all": 0, "errors": 400, "server-errors": 500}

_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)%]*)\))?%")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


class FormatError(ValueError):
    """A format kgw cannot use: the message names what and where."""


@dataclass(frozen=True, slots=True)
class LogFormat:
    """A parsed format: ``kind`` "json" or "text", ``ops`` the (code, argument) pairs of
    a line in order (argument: the literal's or the JSON field's text, a header name).
    For json, each op's argument is its field name and the header (if any) follows
    after a NUL."""

    kind: str
    ops: tuple[tuple[int, str], ...]


def parse_format(spec: str, redact: tuple[str, ...] = DEFAULT_REDACT) -> LogFormat:
    """``json``, ``text`` or ``text:TEMPLATE``; raises FormatError."""
    redacted = {h.lower() for h in redact}
    if spec == "json":
        ops = []
        for name, code, header in JSON_FIELDS:
            if code == HEADER and header in redacted:
                code = REDACTED
            ops.append((code, f"{name}\0{header}"))
        return LogFormat("json", tuple(ops))
    if spec == "text":
        template = TEXT_DEFAULT
    elif spec.startswith("text:"):
        template = spec[5:]
    else:
        raise FormatError(f"access log format {spec[:40]!r}: expected 'json', 'text' or "
                          f"'text:TEMPLATE'")
    return LogFormat("text", _parse_template(template, redacted, 5 if spec != "text" else 0))


def _parse_template(template: str, redacted: set[str], offset: int
                    ) -> tuple[tuple[int, str], ...]:
    ops: list[tuple[int, str]] = []
    literal: list[str] = []
    i = 0
    n = len(template)
    while i < n:
        c = template[i]
        if c != "%":
            literal.append(c)
            i += 1
            continue
        if template.startswith("%%", i):
            literal.append("%")
            i += 2
            continue
        m = _OPERATOR.match(template, i)
        where = f"at position {i + offset}"
        if m is None:
            end = template.find("%", i + 1)
            what = template[i:end + 1] if end >= 0 else template[i:i + 20]
            raise FormatError(f"access log format: malformed operator {what!r} {where} "
                              f"(expected %NAME% or %REQ(HEADER)%; %% for a percent sign)")
        name, arg = m.group(1), m.group(2)
        if name == "REQ" and arg is not None:
            header = arg.lower()
            if not _HEADER_NAME.match(header) and header not in REQ_SPECIAL:
                raise FormatError(f"access log format: %REQ({arg})% {where}: not a header "
                                  f"name")
            code = REQ_SPECIAL.get(header)
            if code is None:
                code = REDACTED if header in redacted else HEADER
            op = (code, header)
        elif arg is None and name in OPERATORS:
            op = (OPERATORS[name], "")
        else:
            shown = m.group(0)
            raise FormatError(f"access log format: unknown operator {shown} {where} "
                              f"(known: {', '.join(sorted(OPERATORS))}, REQ(HEADER))")
        if literal:
            ops.append((LITERAL, "".join(literal)))
            literal = []
        ops.append(op)
        i = m.end()
    literal.append("\n")
    ops.append((LITERAL, "".join(literal)))
    return tuple(ops)


def parse_filter(value: str) -> int:
    """``--access-log-filter``: the lowest status logged (0: every request)."""
    try:
        return FILTERS[value]
    except KeyError:
        raise FormatError(f"access log filter {value!r}: expected one of "
                          f"{', '.join(FILTERS)}") from None


def parse_sample(value: str) -> float:
    """``--access-log-sample``: the share of requests logged, 0 < ratio <= 1."""
    try:
        ratio = float(value)
    except ValueError:
        ratio = -1.0
    if not 0.0 < ratio <= 1.0:
        raise FormatError(f"access log sample {value!r}: expected a ratio in (0, 1]")
    return ratio
