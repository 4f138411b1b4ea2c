"""Effective sections -> the data planes' records: ``kgw_l7.config.RulePolicy`` on each
route rule, ``ListenerPolicy`` on each bound socket. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from controller.policy.attach import Sections, effective
from controller.policy.registry import SECTIONS
from controller.policy.section import Section
from kgw_l7 import config as l7

_ALL: tuple[Section, ...] = tuple(s for kind in SECTIONS.values() for s in kind)
RULE_SECTIONS = tuple(s for s in _ALL if not s.listener_only)
LISTENER_SECTIONS = tuple(s for s in _ALL if s.listener_only)


def merged(layers: Sequence[Sections]) -> Sections:
    """``layers`` least specific first -> the effective sections, in field order."""
    eff = effective(layers)
    return tuple(sorted(eff.items()))


def rule_policy(layers: Sequence[Sections]) -> l7.RulePolicy | None:
    eff = effective(layers)
    kw = {s.attr: eff[s.field] for s in RULE_SECTIONS if s.field in eff}
    return l7.RulePolicy(**kw) if kw else None


def listener_policy(per_listener: Iterable[Sections]) -> l7.ListenerPolicy | None:
    """One bound socket's policy from the effective sections of each Gateway listener
    bound there (in listener order): each section's ``combine``, else the first."""
    found: dict[str, list[Any]] = {}
    for sections in per_listener:
        for field, value in sections:
            found.setdefault(field, []).append(value)
    kw: dict[str, Any] = {}
    for s in LISTENER_SECTIONS:
        values = found.get(s.field)
        if values:
            kw[s.attr] = s.combine(values) if s.combine is not None else values[0]
    return l7.ListenerPolicy(**kw) if kw else None
