"""Data-plane failures show up in Gateway listener status."""

from __future__ import annotations

from controller.objects import ObjectKey
from controller.planestatus import overlay
from kgw_l4.config import L4Config
from kgw_l7.config import L7Config, Listener

GW = ObjectKey("Gateway", "ns", "gw")


def gateway(addresses: list[str]) -> dict:
    return {"metadata": {"name": "gw", "namespace": "ns", "generation": 2},
            "spec": {"addresses": [{"type": "IPAddress", "value": a} for a in addresses],
                     "listeners": [{"name": "http", "port": 80}, {"name": "tcp", "port": 9000},
                                   {"name": "alt", "port": 8080}]}}


def status(addresses: list[str]) -> dict:
    ok = [{"type": "Programmed", "status": "True", "reason": "Programmed", "message": "",
           "observedGeneration": 2}]
    return {"addresses": [{"type": "IPAddress", "value": a} for a in addresses],
            "conditions": [dict(ok[0])],
            "listeners": [{"name": n, "conditions": [dict(ok[0])]} for n in ("http", "tcp", "alt")]}


def programmed(st: dict, listener: str | None = None) -> dict:
    conds = st["conditions"] if listener is None else next(
        x for x in st["listeners"] if x["name"] == listener)["conditions"]
    return next(c for c in conds if c["type"] == "Programmed")


def test_bind_failure_and_l4_error_mark_their_listeners() -> None:
    l7 = L7Config(listeners=(Listener(name="10.0.0.1:80", address="10.0.0.1", port=80),
                             Listener(name="10.0.0.1:8080", address="10.0.0.1", port=8080)))
    st = {GW: status(["10.0.0.1"])}
    out = overlay(st, {GW: gateway(["10.0.0.1"])}.get, l7, L4Config(),
                  {"10.0.0.1:80": "cannot listen on 10.0.0.1:80: address already in use"},
                  {"ns/gw/tcp": "frontend has no backends"})
    http, tcp = programmed(out[GW], "http"), programmed(out[GW], "tcp")
    assert (http["status"], http["reason"], http["observedGeneration"]) == ("False", "Invalid", 2)
    assert "already in use" in http["message"]
    assert tcp["status"] == "False" and tcp["message"] == "frontend has no backends"
    assert programmed(out[GW], "alt")["status"] == "True"
    assert programmed(out[GW])["status"] == "True", "one listener still serves"
    assert programmed(st[GW], "http")["status"] == "True", "the input is not modified"


def test_gateway_not_programmed_when_no_listener_is() -> None:
    l7 = L7Config(listeners=(Listener(name="0.0.0.0:80", address="0.0.0.0", port=80),
                             Listener(name="0.0.0.0:8080", address="0.0.0.0", port=8080)))
    errs = {"0.0.0.0:80": "in use", "0.0.0.0:8080": "in use"}
    out = overlay({GW: status(["192.0.2.1"])}, {GW: gateway([])}.get, l7, L4Config(), errs,
                  {"ns/gw/tcp": "x"})
    assert programmed(out[GW])["status"] == "False"


def test_nothing_to_do_without_errors() -> None:
    st = {GW: status([])}
    assert overlay(st, {}.get, L7Config(), L4Config(), {}, {}) == st


def test_frontend_without_endpoints_is_not_a_listener_failure() -> None:
    from kgw_l4.config import BackendGroup, Frontend
    l4 = L4Config(frontends=(
        Frontend("ns/gw/tcp", "10.0.0.1", 9000, backends=(BackendGroup("ns/missing:80"),)),))
    st = {GW: status(["10.0.0.1"])}
    out = overlay(st, {GW: gateway(["10.0.0.1"])}.get, L7Config(), l4, {},
                  {"ns/gw/tcp": "no backends"})
    assert programmed(out[GW], "tcp")["status"] == "True"


TP = ObjectKey("TrafficPolicy", "ns", "limit")
SP = ObjectKey("SecurityPolicy", "ns", "auth")


def policy_status(*accepted: bool) -> dict:
    return {"ancestors": [{"ancestorRef": {"name": f"gw{i}"}, "conditions": [
        {"type": "Accepted", "status": "True" if ok else "False",
         "reason": "Accepted" if ok else "Conflicted", "message": "", "observedGeneration": 3}]}
        for i, ok in enumerate(accepted)]}


POLICIES = {
    TP: {"metadata": {"name": "limit", "namespace": "ns", "generation": 3},
         "spec": {"rateLimit": {"global": {"redis": {"address": "redis.invalid:6379"}}}}},
    SP: {"metadata": {"name": "auth", "namespace": "ns", "generation": 3},
         "spec": {"jwt": {"providers": [{"name": "a", "localJWKS": {"type": "Inline"}},
                                        {"name": "b", "remoteJWKS": {"uri": "https://i/jwks"}}]},
                  "extAuth": {"protocol": "HTTP", "backendRef": {"name": "authz", "port": 9000}}}},
}


def test_runtime_problems_mark_the_policies_naming_them() -> None:
    """Accepted ancestors get ResolvedRefs=False naming the field, the address and the
    error; a not-accepted ancestor and policies naming nothing failing are left alone."""
    st = {TP: policy_status(True, False), SP: policy_status(True),
          ObjectKey("TrafficPolicy", "ns", "other"): policy_status(True)}
    lookup = {**POLICIES, ObjectKey("TrafficPolicy", "ns", "other"): {
        "metadata": {"name": "other", "namespace": "ns"},
        "spec": {"rateLimit": {"global": {"redis": {"address": "fine:6379"}}}}}}.get
    problems = {("redis", "redis.invalid:6379"): "unresolvable (Name or service not known)",
                ("jwks", "https://i/jwks"): "fetch failed: HTTP 500",
                ("extauth", "ns/authz:9000"): "ns/authz:9000: timeout (2s)",
                ("redis", "unused:6379"): "refused"}
    out = overlay(st, lookup, L7Config(), L4Config(), {}, {}, problems)
    accepted, conflicted = (a["conditions"] for a in out[TP]["ancestors"])
    assert accepted[0]["status"] == "True", "the policy still applies"
    assert accepted[1] == {
        "type": "ResolvedRefs", "status": "False", "reason": "Unreachable",
        "message": "spec.rateLimit.global.redis.address redis.invalid:6379: unresolvable "
                   "(Name or service not known)", "observedGeneration": 3}
    assert [c["type"] for c in conflicted] == ["Accepted"]
    (sec,) = (a["conditions"] for a in out[SP]["ancestors"])
    assert sec[1]["message"] == (
        "spec.jwt.providers[1].remoteJWKS.uri https://i/jwks: fetch failed: HTTP 500; "
        "spec.extAuth.backendRef ns/authz:9000: ns/authz:9000: timeout (2s)")
    assert out[ObjectKey("TrafficPolicy", "ns", "other")] is st[
        ObjectKey("TrafficPolicy", "ns", "other")]
    assert len(st[TP]["ancestors"][0]["conditions"]) == 1, "the input is not modified"


def test_recovered_problem_leaves_the_policy_as_translated() -> None:
    st = {TP: policy_status(True)}
    assert overlay(st, POLICIES.get, L7Config(), L4Config(), {}, {}, {}) == st
