"""The generated objects as a user would apply them (``kgw translate --to-gateway-api``),
like ingress2gateway: valid names (``<ingress>-<n>``), the Gateway in a namespace of the
user's (``kgw-system``) with its own GatewayClass name ``kgw``, and the rules as kgw
serves them -- including the Host header match that keeps an Ingress wildcard to one
label, and the ``Server`` response header."""

from __future__ import annotations

import json

from controller.ingress.convert import GRANT_NAME, ROUTE_SEP, Conversion
from controller.objects import Obj

NAMESPACE = "kgw-system"
CLASS = "kgw"


def as_list(conv: Conversion) -> dict:
    items: list[Obj] = []
    for o in conv.objects:
        o = json.loads(json.dumps(o))  # no shared parts: YAML without anchors
        meta = o["metadata"]
        meta.pop("generation", None)
        meta.pop("creationTimestamp", None)
        if o["kind"] == "GatewayClass":
            continue
        if o["kind"] == "Gateway":
            meta["namespace"] = NAMESPACE
            o["spec"]["gatewayClassName"] = CLASS
        elif o["kind"] == "ReferenceGrant":
            meta["name"] = GRANT_NAME
            o["spec"]["from"][0]["namespace"] = NAMESPACE
        elif o["kind"] == "HTTPRoute":
            meta["name"] = meta["name"].replace(ROUTE_SEP, "-")
            for ref in o["spec"]["parentRefs"]:
                ref["namespace"] = NAMESPACE
        elif o["kind"] == "TrafficPolicy":  # (named as the route it limits)
            for ref in o["spec"]["targetRefs"]:
                ref["name"] = ref["name"].replace(ROUTE_SEP, "-")
            meta["name"] = o["spec"]["targetRefs"][0]["name"]
        items.append(o)
    return {"apiVersion": "v1", "kind": "List", "items": items}
