"""HTTPRoute and GRPCRoute rules -> kgw_l7 rules and matches (gateway left blank).

The Gateway a rule is served for is filled in by route.py once parents are known.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.objects import Obj, ObjectKey
from controller.translate import backend as be
from controller.translate import conditions as c
from controller.translate.filters import resolve_filters
from controller.translate.ir import Cond
from controller.translate.precedence import grpc_match_key
from controller.translate.reader import Reader
from controller.translate.util import as_dict, as_int, as_list, as_str, parse_duration, spec
from kgw_l7 import config as l7
from kgw_l7.regex import compile_bytes, compile_text


#: Rule fields the schema accepts and kgw does not implement: the route is not Accepted
#: (UnsupportedValue), as the spec asks of an implementation that cannot honour a field.
UNSUPPORTED_RULE_FIELDS: dict[str, str] = {}

#: An HTTP token (RFC 9110 5.6.2): what a cookie name and a header field name are made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def session_persistence(raw: object, where: str,
                        problems: list[Cond]) -> l7.SessionPersistence | None:
    """A rule's ``sessionPersistence`` (GEP-1619) as the proxy's record; None when unset
    or unusable (a problem naming the field: the route is then not Accepted, rather than
    served without the persistence it asks for)."""
    if not isinstance(raw, dict):
        return None
    name = as_str(raw.get("sessionName"))
    if name and not _TOKEN.fullmatch(name):
        problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                             f"{where}.sessionName: {name!r} is not a valid cookie or header "
                             "name (letters, digits and !#$%&'*+-.^_`|~ only)"))
        return None
    kind = as_str(raw.get("type"), "Cookie") or "Cookie"
    lifetime = as_str(as_dict(raw.get("cookieConfig")).get("lifetimeType"), "Session")
    absolute = parse_duration(raw.get("absoluteTimeout")) or None
    return l7.SessionPersistence(
        name=name, type="Header" if kind == "Header" else "Cookie",
        absolute_timeout=absolute,
        idle_timeout=parse_duration(raw.get("idleTimeout")) or None,
        permanent=kind == "Cookie" and lifetime == "Permanent" and absolute is not None)


@dataclass
class RulesResult:
    #: (rule index, rule with gateway "", matches)
    rules: list[tuple[int, l7.Rule, tuple[l7.RouteMatch, ...]]] = field(default_factory=list)
    #: (rule index, match index) -> the match's precedence rank, for GRPCRoute matches
    #: (precedence.grpc_match_key); HTTPRoute matches are ranked by what they compile to.
    ranks: dict[tuple[int, int], tuple[int, int, int, int, int]] = field(default_factory=dict)
    problems: list[Cond] = field(default_factory=list)
    services: set[ObjectKey] = field(default_factory=set)


def regex_error(value: str, compile_: Callable[[str], object]) -> str | None:
    """Why the router cannot compile ``value`` (Python's message, with the position), or None."""
    try:
        compile_(value)
    except re.error as exc:
        where = (f" at position {exc.pos}" if exc.pos is not None and "position" not in exc.msg
                 else "")
        return f"{exc.msg}{where}"
    except (RecursionError, OverflowError, MemoryError) as exc:  # pathological nesting or repeats
        return f"cannot be compiled ({type(exc).__name__})"
    return None


def _value_matches(raw: object, cls: type, problems: list[Cond], what: str,
                   compile_: Callable[[str], object]) -> tuple:
    out = []
    for i, m in enumerate(map(as_dict, as_list(raw))):
        name = as_str(m.get("name"))
        value = as_str(m.get("value"))
        t = as_str(m.get("type"), "Exact") or "Exact"
        if not name:
            continue
        if t not in ("Exact", "RegularExpression"):
            problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                 f"{what}[{i}] ({name}): match type {t!r} is not supported"))
            continue
        why = regex_error(value, compile_) if t == "RegularExpression" else None
        if why is not None:
            problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                 f"{what}[{i}] ({name}): invalid regular expression {value!r}: "
                                 f"{why}"))
            continue
        out.append(cls(name=name, value=value, type=t))
    return tuple(out)


def http_match(raw: dict, problems: list[Cond]) -> l7.RouteMatch | None:
    p = as_dict(raw.get("path"))
    ptype = as_str(p.get("type"), "PathPrefix") or "PathPrefix"
    pval = as_str(p.get("value"), "/") or "/"
    if ptype == "RegularExpression":
        why = regex_error(pval, compile_bytes)
        if why is not None:
            problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                 f"path: invalid regular expression {pval!r}: {why}"))
            return None
    elif ptype not in ("Exact", "PathPrefix") or not pval.startswith("/"):
        problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                             f"path: unsupported match {ptype} {pval!r}"))
        return None
    method = as_str(raw.get("method")) or None
    return l7.RouteMatch(
        path=l7.PathMatch(ptype, pval),  # type: ignore[arg-type]
        headers=_value_matches(raw.get("headers"), l7.HeaderMatch, problems, "headers",
                               compile_bytes),
        query_params=_value_matches(raw.get("queryParams"), l7.QueryParamMatch, problems,
                                    "queryParams", compile_text),
        method=method.upper() if method else None,
    )


def grpc_match(raw: dict, problems: list[Cond]) -> l7.RouteMatch | None:
    """gRPC method match -> HTTP/2 path: /service/method."""
    m = as_dict(raw.get("method"))
    t = as_str(m.get("type"), "Exact") or "Exact"
    svc, meth = as_str(m.get("service")), as_str(m.get("method"))
    if t == "Exact":
        if svc and meth:
            path = l7.PathMatch("Exact", f"/{svc}/{meth}")
        elif svc:
            path = l7.PathMatch("PathPrefix", f"/{svc}")
        elif meth:
            path = l7.PathMatch("RegularExpression", f"/[^/]+/{re.escape(meth)}")
        else:
            path = l7.PathMatch()
    elif t == "RegularExpression":
        for what, value in (("service", svc), ("method", meth)):
            why = regex_error(value, compile_bytes) if value else None
            if why is not None:
                problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                     f"method.{what}: invalid regular expression {value!r}: {why}"))
                return None
        path = l7.PathMatch("RegularExpression", f"/{svc or '[^/]+'}/{meth or '[^/]+'}")
        why = regex_error(path.value, compile_bytes)  # each part compiles; together they must too
        if why is not None:
            problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                 f"method: invalid regular expression {path.value!r}: {why}"))
            return None
    else:
        problems.append(
            Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE, f"method: unsupported match type {t!r}"))
        return None
    return l7.RouteMatch(path=path, headers=_value_matches(raw.get("headers"), l7.HeaderMatch,
                                                           problems, "headers",
                                                          compile_bytes))


def _timeout(value: object) -> float | None:
    """Seconds; None when unset (the proxy's default response timeout applies), 0.0 for
    "0s", which Gateway API defines as no timeout at all."""
    if value is None:
        return None
    return parse_duration(value) or 0.0


def resolve_rules(reader: Reader, route: Obj, key: ObjectKey) -> RulesResult:
    grpc = key.kind == "GRPCRoute"
    default_proto: l7.BackendProtocol = "h2c" if grpc else "http"
    res = RulesResult()
    rules = as_list(spec(route).get("rules")) or [{}]
    for ri, raw in enumerate(map(as_dict, rules)):
        rname = as_str(raw.get("name"))
        name = f"{key.namespace}/{key.name}/{rname or ri}"
        raw_matches = as_list(raw.get("matches")) or [{}]
        matches: list[l7.RouteMatch] = []
        for mi, m in enumerate(map(as_dict, raw_matches)):
            found: list[Cond] = []
            rm = (grpc_match if grpc else http_match)(m, found)
            res.problems.extend(dataclasses.replace(
                p, message=f"spec.rules[{ri}].matches[{mi}].{p.message}")
                                for p in found)
            if rm is not None:
                if grpc:
                    meth = as_dict(m.get("method"))
                    res.ranks[(ri, len(matches))] = grpc_match_key(
                        as_str(meth.get("service")), as_str(meth.get("method")), len(rm.headers))
                matches.append(rm)
        for fld, why in UNSUPPORTED_RULE_FIELDS.items():
            if raw.get(fld) is not None:
                res.problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                         f"spec.rules[{ri}].{fld}: {why}"))
        session = session_persistence(raw.get("sessionPersistence"),
                                      f"spec.rules[{ri}].sessionPersistence", res.problems)
        fr = resolve_filters(reader, raw.get("filters"), key.kind, key.namespace, default_proto)
        res.problems.extend(fr.problems)
        res.services.update(b.service for b in fr.mirrors if b.service is not None)
        backends = []
        for ref in map(as_dict, as_list(raw.get("backendRefs"))):
            rb = be.resolve(reader, ref, key.kind, key.namespace)
            if rb.problem is not None:
                res.problems.append(rb.problem)
            if rb.service is not None:
                res.services.add(rb.service)
            bf = resolve_filters(reader, ref.get("filters"), key.kind, key.namespace,
                                 default_proto, on_backend=True)
            res.problems.extend(bf.problems)
            res.services.update(b.service for b in bf.mirrors if b.service is not None)
            b = rb.l7(filters=None if bf.filters == l7.Filters() else bf.filters,
                      default_protocol=default_proto)
            if bf.fail:
                b = l7.Backend(name=b.name, weight=b.weight, filters=b.filters, error_status=500)
            backends.append(b)
        rule_filters = fr.filters
        live = [b for b in backends if b.weight > 0]
        if len(live) == 1 and live[0].filters is not None and live[0].filters.redirect is not None \
                and rule_filters.redirect is None and live[0].error_status is None:
            # A redirect on the only backend answers every request of the rule: state it
            # on the rule, where the proxy applies redirects (identical behaviour).
            bf_ = live[0].filters
            rule_filters = dataclasses.replace(rule_filters, redirect=bf_.redirect)
            rest = dataclasses.replace(bf_, redirect=None)
            backends[backends.index(live[0])] = dataclasses.replace(
                live[0], filters=None if rest == l7.Filters() else rest)
        direct = None
        if fr.fail or not backends and rule_filters.redirect is None:
            direct = 500
        timeouts = as_dict(raw.get("timeouts"))
        retry = None
        rraw = raw.get("retry")
        if isinstance(rraw, dict):
            codes = tuple(sorted(
                {x for x in (as_int(v) for v in as_list(rraw.get("codes"))) if x is not None}))
            attempts = as_int(rraw.get("attempts"), 1)
            retry = l7.Retry(attempts=attempts if attempts is not None and attempts >= 0 else 1,
                             codes=codes, backoff=parse_duration(rraw.get("backoff")))
        rule = l7.Rule(
            name=name, route=f"{key.namespace}/{key.name}", gateway="",
            filters=rule_filters, backends=tuple(backends), direct_status=direct,
            request_timeout=_timeout(timeouts.get("request")),
            backend_timeout=_timeout(timeouts.get("backendRequest")),
            retry=retry, session=session,
        )
        res.rules.append((ri, rule, tuple(matches)))
    return res
