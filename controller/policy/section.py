"""The Section record: one top-level spec field of a policy kind, owned by one module.

A section module exports one ``SECTION``. Its ``schema`` joins the kind's CRD schema
(defaults, limits and rules: what the API server and ``kgw validate`` check); its
``compile`` turns a validated, defaulted value into the typed record a data plane
gets, and never fails on a value the schema accepted. ``attr`` names the field of
``kgw_l7.config.RulePolicy`` it fills (rule level: applied to each route rule) or, for
a section about connections rather than requests (``listener_only``), of
``kgw_l7.config.ListenerPolicy``.

Precedence is per section: the most specific target that sets a section wins for that
section, whole (values of one section are never mixed across policies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from controller.schema.errors import FieldError
from controller.schema.nodes import Node


@dataclass(frozen=True)
class Section:
    #: The spec field ("rateLimit").
    field: str
    schema: Node
    #: (a schema-valid, defaulted value, its scope) -> the data plane's record (pure,
    #: never raises). The scope names the policy and the target it came from
    #: ("TrafficPolicy ns/name on HTTPRoute ns/r"): state kept per attachment (a rate
    #: limit's buckets) is keyed by it.
    compile: Callable[..., Any]
    #: The RulePolicy / ListenerPolicy attribute it fills ("rate_limit").
    attr: str
    #: Applies to connections before any request is routed: only a Gateway or listener
    #: target can set it (a route target setting it is reported Invalid).
    listener_only: bool = False
    #: listener_only: the value for one bound socket shared by several Gateway listeners
    #: with different values (say, ``min``). None: the first listener's (by name) applies.
    combine: Callable[[list[Any]], Any] | None = None
    #: ``compile`` reads Secrets or ConfigMaps of the policy's namespace: it is called with
    #: a third argument, a lookup (``controller.policy.authcommon.Refs``); the objects it
    #: reads become dependencies (a change re-resolves the namespace's policies).
    refs: bool = False
    #: (value, its field path, a Refs lookup) -> what is wrong with the objects the section
    #: reads (a Secret missing or unusable): the policy is then Invalid, naming the field,
    #: as for a schema error. None: nothing to check.
    check_refs: Callable[..., Iterable[FieldError]] | None = None
