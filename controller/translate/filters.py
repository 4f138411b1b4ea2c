"""HTTPRoute / GRPCRoute filters -> kgw_l7.config.Filters.

An ExtensionRef names a custom filter; kgw supports none, so such a filter can never be
resolved. The spec (HTTPRouteFilter.extensionRef) says the filter must not be skipped and
the requests it would have processed must get an error: the rule answers 500, and the
route reports ResolvedRefs=False, reason InvalidKind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.translate import backend as be
from controller.translate import conditions as c
from controller.translate.extauth import resolve_ext_auth
from controller.translate.ir import Cond
from controller.translate.reader import Reader
from controller.translate.util import as_dict, as_int, as_list, as_str, ref_group
from kgw_l7 import config as l7


@dataclass
class FilterResult:
    filters: l7.Filters
    #: The rule must answer 500 (unresolvable custom filter).
    fail: bool = False
    problems: list[Cond] = field(default_factory=list)
    #: Backends resolved for mirrors (their Services are dependencies for policies).
    mirrors: list[be.ResolvedBackend] = field(default_factory=list)


def _pairs(items: object) -> tuple[tuple[str, str], ...]:
    out = []
    for h in map(as_dict, as_list(items)):
        name = as_str(h.get("name"))
        if name:
            out.append((name, as_str(h.get("value"))))
    return tuple(out)


def header_modifier(raw: object) -> l7.HeaderModifier:
    r = as_dict(raw)
    return l7.HeaderModifier(
        set=_pairs(r.get("set")), add=_pairs(r.get("add")),
        remove=tuple(x for x in as_list(r.get("remove")) if isinstance(x, str)),
    )


def path_modifier(raw: object) -> l7.PathModifier | None:
    r = as_dict(raw)
    t = as_str(r.get("type"))
    if t == "ReplaceFullPath":
        return l7.PathModifier("ReplaceFullPath", as_str(r.get("replaceFullPath"), "/") or "/")
    if t == "ReplacePrefixMatch":
        return l7.PathModifier("ReplacePrefixMatch",
                               as_str(r.get("replacePrefixMatch"), "/") or "/")
    return None


def _percent(raw: dict) -> float:
    if raw.get("percent") is not None:
        p = as_int(raw.get("percent"), 100)
        return float(max(0, min(100, p if p is not None else 100)))
    frac = as_dict(raw.get("fraction"))
    if frac:
        num = as_int(frac.get("numerator"), 0) or 0
        den = as_int(frac.get("denominator"), 100) or 100
        return max(0.0, min(100.0, 100.0 * num / den)) if den > 0 else 0.0
    return 100.0


def resolve_filters(
    reader: Reader, raw_filters: object, route_kind: str, route_ns: str,
    default_protocol: l7.BackendProtocol = "http", on_backend: bool = False,
) -> FilterResult:
    """``on_backend``: the filters of a backendRef (ExternalAuth is a rule's filter only:
    one on a backendRef cannot be honoured, so that backend answers 500 rather than
    serve requests unchecked)."""
    req = resp = None
    redirect = rewrite = cors = None
    ext_auth = None
    mirrors: list[l7.Mirror] = []
    res = FilterResult(l7.Filters())
    for f in map(as_dict, as_list(raw_filters)):
        t = as_str(f.get("type"))
        if t == "RequestHeaderModifier" and req is None:
            req = header_modifier(f.get("requestHeaderModifier"))
        elif t == "ResponseHeaderModifier" and resp is None:
            resp = header_modifier(f.get("responseHeaderModifier"))
        elif t == "RequestRedirect" and redirect is None:
            r = as_dict(f.get("requestRedirect"))
            code = as_int(r.get("statusCode"), 302) or 302
            scheme = as_str(r.get("scheme")) or None
            redirect = l7.Redirect(
                scheme=scheme, hostname=as_str(r.get("hostname")) or None,
                port=as_int(r.get("port")), path=path_modifier(r.get("path")),
                status_code=code if code in (301, 302, 303, 307, 308) else 302,
            )
        elif t == "URLRewrite" and rewrite is None:
            r = as_dict(f.get("urlRewrite"))
            rewrite = l7.URLRewrite(hostname=as_str(r.get("hostname")) or None,
                                    path=path_modifier(r.get("path")))
        elif t == "RequestMirror":
            r = as_dict(f.get("requestMirror"))
            rb = be.resolve(reader, as_dict(r.get("backendRef")), route_kind, route_ns)
            res.mirrors.append(rb)
            if rb.problem is not None:
                res.problems.append(rb.problem)
            else:
                mirrors.append(l7.Mirror(rb.l7(default_protocol=default_protocol), _percent(r)))
        elif t == "CORS" and cors is None:
            r = as_dict(f.get("cors"))
            strs = lambda k: tuple(x for x in as_list(r.get(k)) if isinstance(x, str))  # noqa: E731, B023
            age = as_int(r.get("maxAge"), 5)
            cors = l7.CORS(
                allow_origins=strs("allowOrigins"), allow_methods=strs("allowMethods"),
                allow_headers=strs("allowHeaders"), expose_headers=strs("exposeHeaders"),
                allow_credentials=r.get("allowCredentials") is True,
                max_age=age if age is not None else 5,
            )
        elif t == "ExternalAuth" and on_backend:
            res.fail = True
            res.problems.append(Cond(
                c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                "ExternalAuth filter on a backendRef is not supported (set it on the rule): "
                "that backend answers 500"))
        elif t == "ExternalAuth" and ext_auth is None:
            ea = resolve_ext_auth(reader, f.get("externalAuth"), route_kind, route_ns)
            if ea.backend is not None:
                res.mirrors.append(ea.backend)  # (its Service is a dependency too)
            if ea.ext_auth is None:
                res.fail = True
                problem = ea.backend.problem if ea.backend is not None else None
                res.problems.append(Cond(
                    c.RESOLVED_REFS, False, problem.reason if problem else c.R_BACKEND_NOT_FOUND,
                    "ExternalAuth filter: " + (problem.message if problem else
                                               "the authorization service is unusable")
                    + " (the rule answers 500)"))
            else:
                ext_auth = ea.ext_auth
        elif t == "ExtensionRef":
            e = as_dict(f.get("extensionRef"))
            res.fail = True
            res.problems.append(Cond(
                c.RESOLVED_REFS, False, c.R_INVALID_KIND,
                f"ExtensionRef filter {ref_group(e, '') or 'core'}/{as_str(e.get('kind'))} "
                f"{as_str(e.get('name'))} is not a filter kgw supports"))
        elif t in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect",
                   "URLRewrite", "CORS", "ExternalAuth"):
            continue  # repeated filter type: the API rejects it; keep the first
        else:
            res.problems.append(Cond(c.ACCEPTED, False, c.R_UNSUPPORTED_VALUE,
                                     f"filter type {t!r} is not supported"))
            res.fail = True
    res.filters = l7.Filters(
        request_headers=req, response_headers=resp, redirect=redirect, rewrite=rewrite,
        mirrors=tuple(mirrors), cors=cors, ext_auth=ext_auth,
    )
    return res
