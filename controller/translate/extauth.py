"""External authorization settings -> kgw_l7.config.ExtAuth.

One translation for the two places a user asks for it: the Gateway API ``ExternalAuth``
HTTPRoute filter (``HTTPExternalAuthFilter``: protocol, backendRef, grpc/http, forwardBody)
and the SecurityPolicy ``extAuth`` section, which is the same object with kgw's extra
fields (``timeout``, ``failOpen``, ``statusOnError``).

The service's backendRef resolves like any backend (ReferenceGrant, endpoints). One that
does not resolve cannot be asked: the rule must not be served unchecked, so it answers 500
(``fail``) and the route says why (ResolvedRefs=False), as an unresolvable ExtensionRef.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from controller.objects import ObjectKey
from controller.translate import backend as be
from controller.translate import conditions as c
from controller.translate.ir import Cond
from controller.translate.reader import Reader
from controller.translate.util import as_dict, as_int, as_list, as_str, parse_duration
from kgw_l7 import config as l7

#: Seconds to wait for the service when nothing says (Envoy Gateway's default is 10 s,
#: Envoy's 200 ms; a browser-facing request should not hang 10 s on a dead service).
DEFAULT_TIMEOUT = 2.0


@dataclass
class ExtAuthResult:
    ext_auth: l7.ExtAuth | None
    #: The service's reference did not resolve (``backend.problem`` says why).
    backend: be.ResolvedBackend | None = None

    @property
    def fail(self) -> bool:
        return self.ext_auth is None


def _names(raw: object) -> tuple[str, ...]:
    return tuple(sorted({x.lower() for x in as_list(raw) if isinstance(x, str) and x}))


def resolve_ext_auth(reader: Reader, raw: object, from_kind: str, from_ns: str) -> ExtAuthResult:
    """The ExtAuth record of a (schema-valid) externalAuth / extAuth object."""
    r = as_dict(raw)
    grpc = as_str(r.get("protocol")).upper() == "GRPC"
    rb = be.resolve(reader, as_dict(r.get("backendRef")), from_kind, from_ns)
    if rb.problem is not None or rb.policy_error:
        return ExtAuthResult(None, rb)
    backend = rb.l7(default_protocol="h2c" if grpc else "http")
    if grpc and backend.protocol not in l7.HTTP2_PROTOCOLS:
        # gRPC is HTTP/2 whatever the Service's appProtocol says.
        backend = dataclasses.replace(backend, protocol="h2" if backend.tls else "h2c")
    if not grpc and backend.protocol in ("ws", "wss"):
        backend = dataclasses.replace(backend, protocol="https" if backend.tls else "http")
    http = as_dict(r.get("http"))
    proto_cfg = as_dict(r.get("grpc")) if grpc else http
    body = as_int(as_dict(r.get("forwardBody")).get("maxSize"), 0) or 0
    timeout = parse_duration(r.get("timeout")) if r.get("timeout") is not None else None
    status = as_int(r.get("statusOnError"), 403) or 403
    return ExtAuthResult(l7.ExtAuth(
        protocol="GRPC" if grpc else "HTTP",
        backend=backend,
        path_prefix="" if grpc else as_str(http.get("path")),
        allowed_headers=_names(proto_cfg.get("allowedHeaders")),
        allowed_response_headers=() if grpc else _names(http.get("allowedResponseHeaders")),
        max_body=max(0, min(body, 65535)),
        timeout=timeout if timeout else DEFAULT_TIMEOUT,
        fail_open=r.get("failOpen") is True,
        status_on_error=status if 200 <= status <= 599 else 403,
    ), rb)


@dataclass
class PolicyExtAuth:
    rule: l7.Rule
    #: Why the policy's service cannot be asked (the rule then answers 500).
    problem: Cond | None = None
    #: The service's Service (a dependency: its endpoints change the rule).
    service: ObjectKey | None = None


def with_policy_ext_auth(reader: Reader, rule: l7.Rule) -> PolicyExtAuth:
    """``rule`` with its SecurityPolicy ``extAuth`` (``rule.policy.ext_auth``, the
    validated section) resolved into ``filters.ext_auth``; the route's own ExternalAuth
    filter, more specific, wins. An unusable service: the rule answers 500 (never serves
    unchecked) and ``problem`` says why."""
    pol = rule.policy
    spec = pol.ext_auth if pol is not None else None
    if spec is None or rule.filters.ext_auth is not None:
        return PolicyExtAuth(rule)
    ea = resolve_ext_auth(reader, json.loads(spec.spec), "SecurityPolicy", spec.namespace)
    service = ea.backend.service if ea.backend is not None else None
    if ea.ext_auth is None:
        problem = ea.backend.problem if ea.backend is not None else None
        return PolicyExtAuth(
            dataclasses.replace(rule, direct_status=500),
            Cond(c.RESOLVED_REFS, False, problem.reason if problem else c.R_BACKEND_NOT_FOUND,
                 f"SecurityPolicy extAuth (rule {rule.name}): "
                 + (problem.message if problem else "the authorization service is unusable")
                 + " (the rule answers 500)"),
            service)
    return PolicyExtAuth(dataclasses.replace(
        rule, filters=dataclasses.replace(rule.filters, ext_auth=ea.ext_auth)), None, service)
