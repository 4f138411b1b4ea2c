"""SecurityPolicy ``extAuth``: ask an external authorization service before forwarding.

The same object as the Gateway API ``ExternalAuth`` HTTPRoute filter (protocol, backendRef,
grpc/http, forwardBody; one translation: controller/translate/extauth.py, one engine:
kgw_l7/extauth.py) plus kgw's fields:

* ``timeout``: how long to wait for the answer (default 2s);
* ``failOpen``: let the request through when the service gives no answer (default false:
  a service down, timing out or answering garbage denies);
* ``statusOnError``: the status of such a denial (default 403, as Envoy).

A section compiles without the cluster's objects, but its backendRef needs them (the
Service's endpoints, a ReferenceGrant): so it lands as the validated section itself
(``kgw_l7.config.ExtAuthSpec``) and translation resolves it for each route rule
(``controller.translate.route``), where an unusable service makes the rule answer 500
and the route say why. A route's own ExternalAuth filter is more specific and wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from controller.duration import parse_duration
from controller.policy.section import Section
from controller.schema.common import DURATION
from controller.schema.errors import FieldError
from controller.schema.nodes import Bool, Int, extend
from controller.schema.routes import EXTERNAL_AUTH
from kgw_l7.config import ExtAuthSpec


def _timeout_positive(value: dict, path: str) -> Iterable[FieldError]:
    try:
        zero = "timeout" in value and parse_duration(value["timeout"]) == 0
    except (TypeError, ValueError):
        return  # (the field's own pattern reports it)
    if zero:
        yield FieldError(path + ".timeout", "must be more than 0s (a check must end)")


SCHEMA = extend(EXTERNAL_AUTH, {
    "timeout": DURATION,
    "failOpen": Bool(),
    "statusOnError": Int(200, 599),
}, rules=[_timeout_positive])


def _namespace(scope: str) -> str:
    """The policy's namespace from its scope ("SecurityPolicy ns/name on ...")."""
    parts = scope.split(" ", 2)
    return parts[1].split("/", 1)[0] if len(parts) > 1 else ""


def compile_ext_auth(value: dict, scope: str) -> ExtAuthSpec:
    return ExtAuthSpec(namespace=_namespace(scope),
                       spec=json.dumps(value, sort_keys=True, separators=(",", ":")))


SECTION = Section("extAuth", SCHEMA, compile_ext_auth, "ext_auth")
