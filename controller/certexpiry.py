"""Served certificates against the clock: expiry gauges for /metrics, and a warning in the
status of a listener whose certificate has expired or is not valid yet.

kgw serves such a certificate as it is (the proxy loads it; clients that check it refuse
the connection), so the listener stays ``Programmed`` and ``ResolvedRefs`` stays True —
status must not claim kgw refused what it serves. The ``ResolvedRefs`` message says what
is wrong with the certificate and that it is still served.

Translation records each certificate's validity (controller/translate/tlscert.py);
whether it has expired depends on when one asks, so the supervisor asks here each time it
publishes status, and publishes again when the next certificate crosses its notBefore or
notAfter (``next_change``).
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from controller.objects import ObjectKey
from controller.translate.tlscert import ServedCertificate

LABELS = ["gateway", "listener", "secret"]


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def problem(cert: ServedCertificate, now: float) -> str | None:
    """Why a client will refuse this certificate now, or None while it is valid."""
    if now >= cert.not_after:
        return (f"warning: the certificate in Secret {cert.secret} expired at "
                f"{_when(cert.not_after)}; "
                f"it is still served, and clients that check it refuse the connection")
    if now < cert.not_before:
        return (f"warning: the certificate in Secret {cert.secret} is not valid before "
                f"{_when(cert.not_before)}; it is still served, and clients that check it refuse "
                f"the connection until then")
    return None


def warnings(certificates: Iterable[ServedCertificate], now: float) -> dict[tuple[ObjectKey, str],
                                                                            list[str]]:
    """(status owner, listener name) -> the warnings of its certificates now."""
    out: dict[tuple[ObjectKey, str], list[str]] = {}
    for cert in certificates:
        msg = problem(cert, now)
        if msg is not None:
            out.setdefault((cert.owner, cert.listener), []).append(msg)
    return out


def overlay(statuses: Mapping[ObjectKey, dict[str, Any]], certificates: Iterable[ServedCertificate],
            now: float) -> dict[ObjectKey, dict[str, Any]]:
    """``statuses`` with each listener's certificate warnings appended to its ResolvedRefs
    message (inputs are not modified)."""
    found = warnings(certificates, now)
    out = dict(statuses)
    for owner in {k for k, _ in found}:
        status = statuses.get(owner)
        if status is None:
            continue
        new = copy.deepcopy(status)
        for listener in new.get("listeners") or []:
            msgs = found.get((owner, listener.get("name")))
            if not msgs:
                continue
            for cond in listener.get("conditions") or []:
                if cond.get("type") == "ResolvedRefs" and cond.get("status") == "True":
                    cond["message"] = "; ".join(
                        [cond.get("message") or "references resolved", *msgs])
        out[owner] = new
    return out


def next_change(certificates: Iterable[ServedCertificate], now: float) -> float | None:
    """The next moment a certificate becomes valid or expires (status changes then)."""
    times = [t for c in certificates for t in (c.not_before, c.not_after) if t > now]
    return min(times) if times else None


def render(certificates: Iterable[ServedCertificate]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(tuple(certificates)))
    return generate_latest(registry)


class _Collector:
    def __init__(self, certificates: tuple[ServedCertificate, ...]) -> None:
        self.certs = certificates

    def collect(self) -> Iterator[Metric]:
        # One series per label set: a ListenerSet listener named like one of its Gateway's
        # listeners, serving the same Secret, would repeat one; the sooner expiry is kept.
        by_labels: dict[tuple[str, str, str], ServedCertificate] = {}
        for c in self.certs:
            key = (c.gateway, c.listener, c.secret)
            cur = by_labels.get(key)
            if cur is None or c.not_after < cur.not_after:
                by_labels[key] = c
        exp = GaugeMetricFamily("kgw_tls_certificate_expiry_timestamp_seconds",
                                "When a served certificate expires (notAfter, Unix time)",
                                labels=LABELS)
        nb = GaugeMetricFamily("kgw_tls_certificate_not_before_timestamp_seconds",
                               "When a served certificate becomes valid (notBefore, Unix time)",
                               labels=LABELS)
        for key in sorted(by_labels):
            c = by_labels[key]
            exp.add_metric(list(key), c.not_after)
            nb.add_metric(list(key), c.not_before)
        yield exp
        yield nb
