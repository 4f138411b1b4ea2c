"""Replay the upstream conformance suite's status assertions against translate().

Each case loads the base manifests plus the test's own, adds what the upstream suite
generates at setup (TLS Secrets, CA ConfigMaps) and one ready endpoint per Service,
gives each Gateway its own loopback address (as a cluster gives each its own), and
checks every recorded status helper. Needs /work/shared/conformance (or
KGW_CONFORMANCE_DIR); skipped without it.
"""

from __future__ import annotations

import json

import pytest

from controller.translate import Options, translate
from tests.translate.conformance_checks import CheckFailed, evaluate
from tests.translate.conformance_load import (conformance_dir, gateway_addresses, make_store,
                                              objects_for)

ROOT = conformance_dir()

#: Features kgw does not implement (yet): these tests are not claimed.
UNSUPPORTED = {
    "HTTPRouteBackendProtocolH2C": "HTTP/2 to backends",
}
#: Tests upstream runs only where a feature is NOT supported (the Go test returns early
#: when it is claimed); kgw supports these.
NOT_APPLICABLE = {
    "TLSRouteListenerTerminateNotSupported": "kgw supports TLS listeners in Terminate mode",
    "TLSRouteListenerMixedTerminationNotSupported": "kgw supports Passthrough and Terminate on one "
                                                    "port",
}


def _unsupported(case: dict) -> str | None:
    """Why kgw does not claim the test (None: it does)."""
    if "GRPCRoute" in case.get("features", ()):
        return "GRPCRoute (no HTTP/2): not accepted"
    return UNSUPPORTED.get(case["test"]) or NOT_APPLICABLE.get(case["test"])
#: Tests whose checks belong to several phases (the Go test edits objects in between);
#: a single snapshot cannot satisfy them all. test_phases.py replays their phases.
MULTI_PHASE = {
    "GatewayModifyListeners", "GatewayStaticAddresses", "TCPRouteReferenceGrant",
    "UDPRouteReferenceGrant",
    "TCPRouteMultipleRoutesAttachment", "UDPRouteMultipleRoutesAttachment",
    "GatewayNameMaximumLength",
}


def _cases() -> list:
    if ROOT is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="conformance data not found"))]
    out = []
    for path in sorted((ROOT / "cases").glob("*.json")):
        case = json.loads(path.read_text())
        name = case["test"]
        marks = []
        if not case.get("statusChecks"):
            continue
        if _unsupported(case):
            marks.append(pytest.mark.skip(reason=f"unsupported: {_unsupported(case)}"))
        elif name in MULTI_PHASE:
            marks.append(pytest.mark.skip(reason="multi-phase test"))
        out.append(pytest.param(case, id=name, marks=marks))
    return out


@pytest.mark.parametrize("case", _cases())
def test_status_checks(case: dict) -> None:
    store = make_store(objects_for(case, ROOT))
    objects = {k: store.get_key(k) for k in store.keys()}
    t = translate(store, Options(gateway_addresses=gateway_addresses(store)))
    failures = []
    for check in case["statusChecks"]:
        # BackendTLSPolicy edits a CA ConfigMap mid-test; those checks are phase-specific.
        if any("Changing the content" in c for c in check.get("context", [])):
            continue
        try:
            evaluate(check, t.statuses, objects)
        except CheckFailed as e:
            failures.append(f"{check['helper']}: {e}")
    assert not failures, "\n".join(failures)
