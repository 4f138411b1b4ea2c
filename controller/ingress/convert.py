"""Ingresses -> the Gateway API objects that serve them (pure, table-tested).

One Gateway, ``kgw.dev/ingress`` (a namespace no cluster can have, so it never collides
with the user's), of a GatewayClass of kgw's controller, listens where Ingresses are
served: HTTP on the HTTP port without hostname, HTTPS on the HTTPS port with one listener
per ``spec.tls`` host (its Secret, granted by a generated ReferenceGrant in the Ingress's
namespace). Each Ingress becomes one HTTPRoute per host rule, in the Ingress's namespace,
named ``<ingress>~<n>`` (``~`` cannot be in a user's name), and one for its
defaultBackend without hostname. Gateway API precedence then does what the Ingress spec
asks: Exact before Prefix, longer prefixes first, the older object on a tie.

Where the two specs differ, the conversion says how kgw keeps the Ingress meaning:

* Prefix matches element-wise in both; a trailing ``/`` of an Ingress Prefix is dropped
  (the spec ignores it). ImplementationSpecific is Prefix, or a regular expression
  when ``use-regex`` (or a ``rewrite-target`` with capture groups) says so, as
  ingress-nginx does.
* An Ingress wildcard host ``*.foo.com`` covers one DNS label; a Gateway API wildcard
  covers any number. Its rules also match the Host header against one label.
* A defaultBackend serves what no rule of any host matches: its route has no
  hostname, so every virtual host falls back to it.
* Two Ingresses with the same host, path and pathType: the older keeps it, the newer's
  path is left out and reported; the same for two defaultBackends.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from controller.ingress.annotations import NGINX, Annotations, rewrite
from controller.objects import CONTROLLER_NAME, GATEWAY_GROUP, POLICY_GROUP, Obj, ObjectKey
from controller.source import Problem

INGRESS_CONTROLLER = "kgw.dev/ingress-controller"
DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS = "kubernetes.io/ingress.class"
GATEWAY = ObjectKey("Gateway", "kgw.dev", "ingress")
GATEWAY_CLASS = "kgw.dev-ingress"
GRANT_NAME = "kgw.dev-ingress"
ROUTE_SEP = "~"
GW_API = f"{GATEWAY_GROUP}/v1"
#: Ingress controllers name themselves in responses (nginx's ``Server: nginx``); the
#: conformance suite checks a Server header is there whatever the backend sends.
SERVER_HEADER = {"type": "ResponseHeaderModifier",
                 "responseHeaderModifier": {"set": [{"name": "Server", "value": "kgw"}]}}


#: (namespace, name) -> the Service, or None (read only for ports given by name).
ServiceLookup = Callable[[str, str], Obj | None]


@dataclass(frozen=True, slots=True)
class Listening:
    """Where Ingresses are served: every node address, on these ports (0: not at all)."""

    http_port: int = 80
    https_port: int = 443


@dataclass(frozen=True)
class Conversion:
    #: GatewayClass, Gateway, ReferenceGrants and HTTPRoutes, in key order.
    objects: tuple[Obj, ...] = ()
    #: The Ingresses kgw serves.
    served: frozenset[ObjectKey] = frozenset()
    #: Generated HTTPRoute -> the Ingress it comes from.
    route_origin: Mapping[ObjectKey, ObjectKey] = field(default_factory=dict)
    problems: tuple[Problem, ...] = ()
    #: (Ingress, annotation, why): annotations kgw does not carry (``kgw validate``).
    ignored: tuple[tuple[ObjectKey, str, str], ...] = ()
    #: Generated Gateway listener -> the Ingress whose spec.tls asked for it.
    listener_origin: Mapping[str, ObjectKey] = field(default_factory=dict)


def our_classes(classes: Iterable[Obj]) -> tuple[set[str], set[str]]:
    """(names of IngressClasses of kgw's controller, those of them marked default)."""
    ours, default = set(), set()
    for c in classes:
        if as_str(as_dict(c.get("spec")).get("controller")) != INGRESS_CONTROLLER:
            continue
        name = as_str(meta(c).get("name"))
        ours.add(name)
        if as_str(as_dict(meta(c).get("annotations")).get(DEFAULT_CLASS)).lower() == "true":
            default.add(name)
    return ours, default


def is_ours(ing: Obj, ours: set[str], default: set[str]) -> bool:
    name = as_str(as_dict(ing.get("spec")).get("ingressClassName"))
    if not name:
        name = as_str(as_dict(meta(ing).get("annotations")).get(LEGACY_CLASS))
    return name in ours if name else bool(default)


def as_dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list:
    return value if isinstance(value, list) else []


def as_str(value: object) -> str:
    return value if isinstance(value, str) else ""


def as_int(value: object, default: int | None = None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return default


def meta(obj: Obj) -> dict:
    return as_dict(obj.get("metadata"))


def creation_timestamp(obj: Obj) -> str:
    """RFC 3339 text sorts chronologically; a missing timestamp sorts last."""
    ts = meta(obj).get("creationTimestamp")
    return "~" if ts is None else str(ts)


def _key(obj: Obj) -> ObjectKey:
    return ObjectKey.of(obj)


def _age(obj: Obj) -> tuple[str, ObjectKey]:
    return (creation_timestamp(obj), _key(obj))


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def host_regex(host: str) -> str:
    """The Host header of a request one label deep under ``*.suffix`` (any port)."""
    return r"^[^.:]+\." + re.escape(host[2:]) + r"(:[0-9]+)?$"


class _Converter:
    def __init__(self, service: ServiceLookup, listening: Listening) -> None:
        self.service = service
        self.listening = listening
        self.problems: list[Problem] = []
        self.ignored: list[tuple[ObjectKey, str, str]] = []
        #: TrafficPolicies for the routes (proxy-body-size).
        self.policies: list[dict] = []
        #: (host, path type, path) -> the Ingress that has it
        self.claimed: dict[tuple[str, str, str], ObjectKey] = {}
        self.default_owner: ObjectKey | None = None
        #: TLS hostname ("" for a Secret without hosts) -> (Ingress, namespace, secret)
        self.tls: dict[str, tuple[ObjectKey, str, str]] = {}
        self.routes: list[dict] = []
        self.route_origin: dict[ObjectKey, ObjectKey] = {}
        self.redirect_hosts: set[str] = set()
        self.listener_origin: dict[str, ObjectKey] = {}

    def problem(self, key: ObjectKey, fld: str, message: str) -> None:
        self.problems.append(Problem("", message, key, fld))

    # -- backends ------------------------------------------------------------------------

    def backend_ref(self, key: ObjectKey, raw: object, fld: str) -> dict | None:
        b = as_dict(raw)
        if b.get("resource") is not None:
            res = as_dict(b.get("resource"))
            self.problem(key, f"{fld}.resource",
                         f"resource backend {as_str(res.get('kind'))} "
                         f"{as_str(res.get('name'))}: kgw serves Service backends only; "
                         "this path is not served")
            return None
        svc = as_dict(b.get("service"))
        name = as_str(svc.get("name"))
        if not name:
            self.problem(key, fld, "the backend names no Service; this path is not served")
            return None
        port = as_dict(svc.get("port"))
        number = as_int(port.get("number"))
        ref: dict = {"group": "", "kind": "Service", "name": name}
        if number:
            ref["port"] = number
            return ref
        pname = as_str(port.get("name"))
        obj = self.service(key.namespace, name)
        if obj is None:
            self.problem(key, f"{fld}.service",
                         f"Service {key.namespace}/{name} does not exist: requests for this "
                         "path get 500")
            return ref  # resolved by translation: BackendNotFound, a 500 as for an HTTPRoute
        for p in as_list(as_dict(obj.get("spec")).get("ports")):
            if as_str(as_dict(p).get("name")) == pname and pname:
                ref["port"] = as_int(as_dict(p).get("port"))
                return ref
        self.problem(key, f"{fld}.service.port",
                     f"Service {key.namespace}/{name} has no port named {pname!r}: requests "
                     "for this path get 500")
        return ref

    # -- one Ingress ---------------------------------------------------------------------

    def ingress(self, ing: Obj) -> None:
        key = _key(ing)
        s = as_dict(ing.get("spec"))
        ann = Annotations.of(meta(ing).get("annotations"))
        self.ignored.extend((key, a, why) for a, why in ann.ignored())
        if ann.bad_body_size():
            self.ignored.append((key, NGINX + "proxy-body-size",
                                 "not a size (a number, optionally k, m or g)"))
        for i, t in enumerate(map(as_dict, as_list(s.get("tls")))):
            secret = as_str(t.get("secretName"))
            if not secret:
                self.problem(key, f"spec.tls[{i}].secretName",
                             "no secretName: kgw has no default certificate; not served on HTTPS")
                continue
            for host in [normalize_host(as_str(h)) for h in as_list(t.get("hosts"))] or [""]:
                prev = self.tls.get(host)
                if prev is not None and prev[1:] != (key.namespace, secret):
                    self.problem(key, f"spec.tls[{i}]",
                                 f"host {host or '(any)'} already has a certificate from "
                                 f"{prev[0]}: the older Ingress keeps it")
                    continue
                self.tls.setdefault(host, (key, key.namespace, secret))
                if ann.flag("ssl-redirect") or ann.flag("force-ssl-redirect"):
                    self.redirect_hosts.add(host)
        if ann.flag("canary"):
            return  # merged into the Ingress it is the canary of (canaries())
        n = 0
        if s.get("defaultBackend") is not None:
            if self.default_owner is not None:
                self.problem(key, "spec.defaultBackend",
                             f"{self.default_owner} already has the default backend: the older "
                             "Ingress keeps it")
            else:
                ref = self.backend_ref(key, s.get("defaultBackend"), "spec.defaultBackend")
                if ref is not None:
                    self.default_owner = key
                    rule = {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                            "backendRefs": [ref]}
                    self.add_route(ing, n, None, [rule])
            n += 1
        for i, r in enumerate(map(as_dict, as_list(s.get("rules")))):
            host = normalize_host(as_str(r.get("host")))
            rules = []
            for j, p in enumerate(map(as_dict, as_list(as_dict(r.get("http")).get("paths")))):
                prule = self.path_rule(key, ann, host, p, f"spec.rules[{i}].http.paths[{j}]")
                if prule is not None:
                    rules.append(prule)
            if rules:
                self.add_route(ing, n, host or None, rules)
            n += 1

    def path_rule(self, key: ObjectKey, ann: Annotations, host: str, p: dict,
                  fld: str) -> dict | None:
        ptype = as_str(p.get("pathType"))
        path = as_str(p.get("path")) or "/"
        regex = ptype == "ImplementationSpecific" and (
            ann.flag("use-regex") or "$" in (ann.get("rewrite-target") or ""))
        if not regex and not path.startswith("/"):
            self.problem(key, f"{fld}.path",
                         f"path {path!r} is not absolute (must start with '/'); "
                         "this path is not served")
            return None
        if ptype not in ("Exact", "Prefix", "ImplementationSpecific"):
            self.problem(key, f"{fld}.pathType",
                         f"pathType {ptype!r} is not Exact, Prefix or ImplementationSpecific")
            return None
        claim = (host, "Exact", path) if ptype == "Exact" else (
            host, "Regex" if regex else "Prefix", path if regex else path.rstrip("/") or "/")
        owner = self.claimed.get(claim)
        if owner is not None and owner != key:
            self.problem(key, fld, f"host {host or '*'} path {path} ({ptype}) is already "
                                   f"served by {owner}: the older Ingress keeps it")
            return None
        self.claimed[claim] = key
        ref = self.backend_ref(key, p.get("backend"), f"{fld}.backend")
        if ref is None:
            return None
        match_path = path
        filters: list[dict] = []
        target = ann.get("rewrite-target")
        if target is not None:
            # (a regular expression path is replaced whole, as nginx's rewrite does)
            got = rewrite(target, path, "Exact" if ptype == "Exact" or regex else "Prefix")
            if isinstance(got, str):
                self.problem(key, "metadata.annotations", got + "; the path is served without "
                                                           "rewriting")
            else:
                match_path, modifier = got
                regex = regex and match_path == path
                filters.append({"type": "URLRewrite", "urlRewrite": {"path": modifier}})
        cors = ann.cors()
        if cors is not None:
            filters.append({"type": "CORS", "cors": cors})
        if regex:
            pm = {"type": "RegularExpression", "value": match_path}
        elif ptype == "Exact":
            pm = {"type": "Exact", "value": match_path}
        else:
            pm = {"type": "PathPrefix", "value": match_path.rstrip("/") or "/"}
        match: dict = {"path": pm}
        if host.startswith("*."):
            match["headers"] = [{"type": "RegularExpression", "name": "Host",
                                 "value": host_regex(host)}]
        rule: dict = {"matches": [match], "backendRefs": [ref]}
        if filters:
            rule["filters"] = filters
        return rule

    def add_route(self, ing: Obj, n: int, host: str | None, rules: list[dict]) -> None:
        key = _key(ing)
        for rule in rules:
            rule["filters"] = [*rule.get("filters", ()), SERVER_HEADER]
        name = f"{key.name}{ROUTE_SEP}{n}"
        spec: dict = {"parentRefs": [{"group": GATEWAY_GROUP, "kind": "Gateway",
                                      "namespace": GATEWAY.namespace, "name": GATEWAY.name}],
                      "rules": rules}
        if host:
            spec["hostnames"] = [host]
        self.routes.append({
            "apiVersion": GW_API, "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": key.namespace,
                         "creationTimestamp": creation_timestamp(ing),
                         "generation": 1,
                         "labels": {"kgw.dev/ingress": key.name}},
            "spec": spec})
        self.route_origin[ObjectKey("HTTPRoute", key.namespace, name)] = key
        ann = Annotations.of(meta(ing).get("annotations"))
        size = ann.body_size()
        if size is not None:  # proxy-body-size: the route's request limit
            # (a policy's name must be a DNS subdomain: not the route's "~" form)
            pname = f"{key.name}.{n}.kgw-ingress"
            self.policies.append({
                "apiVersion": f"{POLICY_GROUP}/v1alpha1", "kind": "TrafficPolicy",
                "metadata": {"name": pname, "namespace": key.namespace,
                             "creationTimestamp": creation_timestamp(ing), "generation": 1,
                             "labels": {"kgw.dev/ingress": key.name}},
                "spec": {"targetRefs": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute",
                                         "name": name}],
                         "requestLimits": {"maxRequestBodySize": size}}})
            self.route_origin[ObjectKey("TrafficPolicy", key.namespace, pname)] = key

    # -- canaries ------------------------------------------------------------------------

    def canaries(self, canaries: list[Obj]) -> None:
        """ingress-nginx canaries: an Ingress annotated ``canary: "true"`` adds its
        backend to the rule of the other Ingress with the same host and path, by weight
        (canary-weight, of canary-weight-total, default 100) and/or for requests with a
        header (canary-by-header: value ``always``, or canary-by-header-value)."""
        index: dict[tuple[str, str, str], dict] = {}
        for route in self.routes:
            hosts = route["spec"].get("hostnames") or [""]
            for rule in route["spec"]["rules"]:
                pm = rule["matches"][0]["path"]
                index[(hosts[0], pm["type"], pm["value"])] = rule
        for ing in canaries:
            key = _key(ing)
            ann = Annotations.of(meta(ing).get("annotations"))
            s = as_dict(ing.get("spec"))
            for i, r in enumerate(map(as_dict, as_list(s.get("rules")))):
                host = normalize_host(as_str(r.get("host")))
                for j, p in enumerate(map(as_dict, as_list(as_dict(r.get("http")).get("paths")))):
                    fld = f"spec.rules[{i}].http.paths[{j}]"
                    ptype = as_str(p.get("pathType"))
                    path = as_str(p.get("path")) or "/"
                    t = "Exact" if ptype == "Exact" else "PathPrefix"
                    v = path if t == "Exact" else (path.rstrip("/") or "/")
                    main = index.get((host, t, v))
                    if main is None:
                        self.problem(key, fld, f"canary for host {host or '*'} path {path}: no "
                                               "other Ingress serves it; not served")
                        continue
                    ref = self.backend_ref(key, p.get("backend"), f"{fld}.backend")
                    if ref is None:
                        continue
                    self.add_canary(key, ann, main, ref)

    def add_canary(self, key: ObjectKey, ann: Annotations, main: dict, ref: dict) -> None:
        header = ann.get("canary-by-header")
        custom = ann.get("canary-by-header-value")
        if header:
            # ingress-nginx: the header's value "always" (or canary-by-header-value) sends
            # the request to the canary, "never" (without a custom value) keeps it off the
            # canary whatever its weight; any other value falls through to the weight.
            route = next(r for r in self.routes if main in r["spec"]["rules"])
            extra = {k: v for k, v in main.items() if k not in ("matches", "backendRefs")}
            picks = [(custom or "always", ref)]
            if not custom and ann.get("canary-weight") is not None:
                picks.append(("never", main["backendRefs"][0]))
            for value, backend in picks:
                match = dict(main["matches"][0])
                match["headers"] = [*match.get("headers", ()),
                                    {"type": "Exact", "name": header, "value": value}]
                rule = {"matches": [match], "backendRefs": [dict(backend)], **extra}
                route["spec"]["rules"].insert(route["spec"]["rules"].index(main), rule)
        weight = ann.get("canary-weight")
        if weight is not None:
            total = as_int((ann.get("canary-weight-total") or "100").strip(), 100) or 100
            w = as_int(weight.strip(), 0) or 0
            if not 0 <= w <= total:
                self.problem(key, "metadata.annotations",
                             f"canary-weight {weight} is not between 0 and {total}")
                return
            base = main["backendRefs"][0]
            main["backendRefs"] = [{**base, "weight": total - w}, {**ref, "weight": w}]

    # -- the Gateway ---------------------------------------------------------------------

    def gateway(self, created: str) -> list[dict]:
        listeners: list[dict] = []
        grants: dict[str, dict] = {}
        if self.listening.http_port:
            listeners.append({"name": "http", "port": self.listening.http_port,
                              "protocol": "HTTP",
                              "allowedRoutes": {"namespaces": {"from": "All"}}})
        if self.listening.https_port:
            for i, (host, (origin, ns, secret)) in enumerate(sorted(self.tls.items())):
                self.listener_origin[f"https-{i}"] = origin
                lis: dict = {"name": f"https-{i}", "port": self.listening.https_port,
                             "protocol": "HTTPS",
                             "tls": {"mode": "Terminate", "certificateRefs": [
                                 {"group": "", "kind": "Secret", "namespace": ns,
                                  "name": secret}]},
                             "allowedRoutes": {"namespaces": {"from": "All"}}}
                if host:
                    lis["hostname"] = host
                listeners.append(lis)
                grants.setdefault(ns, {
                    "apiVersion": f"{GATEWAY_GROUP}/v1beta1", "kind": "ReferenceGrant",
                    "metadata": {"name": GRANT_NAME, "namespace": ns},
                    "spec": {"from": [{"group": GATEWAY_GROUP, "kind": "Gateway",
                                       "namespace": GATEWAY.namespace}],
                             "to": [{"group": "", "kind": "Secret"}]}})
        gw = {"apiVersion": GW_API, "kind": "Gateway",
              "metadata": {"name": GATEWAY.name, "namespace": GATEWAY.namespace,
                           "creationTimestamp": created, "generation": 1},
              "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": listeners}}
        return [gw, *grants.values()]

    def redirects(self) -> None:
        """ssl-redirect / force-ssl-redirect: the host's plain-HTTP requests get a 308 to
        HTTPS, by a route bound to the HTTP listener only (the HTTPS listener keeps the
        Ingress's own route, by sectionName)."""
        if not (self.listening.http_port and self.listening.https_port):
            return
        for route in list(self.routes):
            host = (route["spec"].get("hostnames") or [""])[0]
            if host not in self.redirect_hosts:
                continue
            https = [f"https-{i}" for i, h in enumerate(sorted(self.tls)) if h == host]
            route["spec"]["parentRefs"] = [{**route["spec"]["parentRefs"][0], "sectionName": s}
                                           for s in https]
            redirect = {"scheme": "https", "statusCode": 308}
            if self.listening.https_port != 443:
                redirect["port"] = self.listening.https_port
            self.routes.append({
                **route, "metadata": {**route["metadata"],
                                      "name": route["metadata"]["name"] + ROUTE_SEP + "redirect"},
                "spec": {**route["spec"],
                         "parentRefs": [{**route["spec"]["parentRefs"][0],
                                         "sectionName": "http"}],
                         "rules": [{"matches": r["matches"],
                                    "filters": [{"type": "RequestRedirect",
                                                 "requestRedirect": redirect}]}
                                   for r in route["spec"]["rules"]]}})
            self.route_origin[ObjectKey("HTTPRoute", route["metadata"]["namespace"],
                                        route["metadata"]["name"] + ROUTE_SEP + "redirect")] = \
                self.route_origin[ObjectKey("HTTPRoute", route["metadata"]["namespace"],
                                            route["metadata"]["name"])]


def convert(ingresses: Iterable[Obj], classes: Iterable[Obj], service: ServiceLookup,
            listening: Listening = Listening(), controller_name: str = "") -> Conversion:
    """The Gateway API objects serving the Ingresses of kgw's classes (pure)."""
    ours, default = our_classes(classes)
    mine = sorted((i for i in ingresses if is_ours(i, ours, default)), key=_age)
    if not mine:
        return Conversion()
    conv = _Converter(service, listening)
    canaries = []
    for ing in mine:
        conv.ingress(ing)
        if Annotations.of(meta(ing).get("annotations")).flag("canary"):
            canaries.append(ing)
    conv.canaries(canaries)
    conv.redirects()
    gwc = {"apiVersion": GW_API, "kind": "GatewayClass",
           "metadata": {"name": GATEWAY_CLASS, "generation": 1},
           "spec": {"controllerName": controller_name or CONTROLLER_NAME}}
    objects = [gwc, *conv.gateway(creation_timestamp(mine[0])), *conv.routes, *conv.policies]
    return Conversion(objects=tuple(sorted(objects, key=_key)),
                      served=frozenset(_key(i) for i in mine),
                      route_origin=dict(conv.route_origin), problems=tuple(conv.problems),
                      ignored=tuple(conv.ignored), listener_origin=dict(conv.listener_origin))
