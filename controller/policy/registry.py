"""The sections of each policy kind: the one list to extend.

A new feature is a module exporting a ``SECTION`` (controller.policy.section) and one
line here. The order is the order of the fields in the CRD and in ``kgw translate``.
"""

from __future__ import annotations

from controller.policy import (
    accesslog, apikeyauth, authorization, backendproxyprotocol, basicauth, circuitbreaker,
    connectionlimit, extauth, headertimeout, healthcheck, jwt, loadbalancer, oidc, proxyprotocol,
    ratelimit, requestlimits, tracing,
)
from controller.policy.section import Section

SECTIONS: dict[str, tuple[Section, ...]] = {
    "TrafficPolicy": (
        ratelimit.SECTION,
        requestlimits.SECTION,
        headertimeout.SECTION,
        loadbalancer.SECTION,
        healthcheck.SECTION,
        circuitbreaker.SECTION,
        connectionlimit.SECTION,
        accesslog.SECTION,
        tracing.SECTION,
        proxyprotocol.SECTION,
        backendproxyprotocol.SECTION,
    ),
    "SecurityPolicy": (
        jwt.SECTION,
        oidc.SECTION,
        basicauth.SECTION,
        apikeyauth.SECTION,
        authorization.SECTION,
        extauth.SECTION,
    ),
}
