"""networking.k8s.io/v1 Ingress and IngressClass: the structure kgw reads.

Only types are checked here (what the API server's OpenAPI schema refuses). The
semantic rules (a Prefix path must be absolute, a backend names a Service or a resource,
not both) are checked by translation (controller/ingress/), which refuses one path and
keeps serving the others, as a reported problem, instead of the whole object.
"""

from __future__ import annotations

from controller.schema.nodes import Anything, Int, ListOf, Str, obj

_SERVICE_BACKEND = obj({
    "name": Str(min_len=1),
    "port": obj({"number": Int(minimum=1, maximum=65535), "name": Str()}),
}, required=["name"])
_RESOURCE = obj({"apiGroup": Str(), "kind": Str(), "name": Str()}, open=True)
_BACKEND = obj({"service": _SERVICE_BACKEND, "resource": _RESOURCE})
_PATH = obj({
    "path": Str(),
    "pathType": Str(enum=("Exact", "Prefix", "ImplementationSpecific")),
    "backend": _BACKEND,
}, required=["pathType", "backend"])
_RULE = obj({"host": Str(), "http": obj({"paths": ListOf(_PATH)}, required=["paths"])})
_TLS = obj({"hosts": ListOf(Str()), "secretName": Str()})

INGRESS_FIELDS = {
    "spec": obj({
        "ingressClassName": Str(),
        "defaultBackend": _BACKEND,
        "tls": ListOf(_TLS),
        "rules": ListOf(_RULE),
    }),
    "status": Anything(),
}

INGRESS_CLASS_FIELDS = {
    "spec": obj({
        "controller": Str(),
        "parameters": obj({"apiGroup": Str(), "kind": Str(), "name": Str(), "namespace": Str(),
                           "scope": Str(enum=("Cluster", "Namespace"))}),
    }),
}
