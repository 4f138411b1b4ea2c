"""The incremental translator and kgw policies: an edit reaches the rules it targets
(and only re-resolves what reads that namespace's policies); an edit that fails
validation is Invalid while the previous good version keeps applying."""

from __future__ import annotations

import copy

from controller.objects import ObjectKey
from controller.source import Event, EventType
from controller.translate import Translator
from tests.policy.worlds import base, ref, rule_policies, tp
from tests.translate.worlds import norm, store_of


def _put(store, obj):
    o = norm(obj)
    store.apply([Event(EventType.MODIFIED, ObjectKey.of(o), o, "2", 2)])
    return {ObjectKey.of(o)}


def _headers(t):
    p = rule_policies(t)["default/r/1"]
    return p.request_limits.max_headers if p and p.request_limits else None


def test_edit_applies_and_invalid_edit_keeps_previous_good() -> None:
    pol = tp("p", [ref("HTTPRoute", "r")], requestLimits={"maxRequestHeaders": 5})
    store = store_of(base() + [pol])
    tr = Translator()
    assert _headers(tr.update(store, set())) == 5

    edited = copy.deepcopy(pol)
    edited["spec"]["requestLimits"]["maxRequestHeaders"] = 7
    assert _headers(tr.update(store, _put(store, edited))) == 7

    # Duplicate targets break a rule the CRD does not hold: a cluster can store it.
    bad = copy.deepcopy(edited)
    bad["spec"]["targetRefs"].append(ref("HTTPRoute", "r", "a"))
    bad["spec"]["requestLimits"]["maxRequestHeaders"] = 9
    t = tr.update(store, _put(store, bad))
    assert _headers(t) == 7  # the previous good version still applies
    (anc,) = t.statuses[ObjectKey("TrafficPolicy", "default", "p")]["ancestors"]
    cond = anc["conditions"][0]
    assert (cond["status"], cond["reason"]) == ("False", "Invalid")
    assert cond["message"].startswith("spec.targetRefs")
    assert "previous version keeps applying" in cond["message"]

    fixed = copy.deepcopy(edited)
    fixed["spec"]["requestLimits"]["maxRequestHeaders"] = 11
    t = tr.update(store, _put(store, fixed))
    assert _headers(t) == 11
    (anc,) = t.statuses[ObjectKey("TrafficPolicy", "default", "p")]["ancestors"]
    assert anc["conditions"][0]["reason"] == "Accepted"


def test_deleting_a_policy_removes_it() -> None:
    pol = tp("p", [ref("Gateway", "gw")], requestLimits={"maxRequestHeaders": 5})
    store = store_of(base() + [pol])
    tr = Translator()
    assert _headers(tr.update(store, set())) == 5
    key = ObjectKey("TrafficPolicy", "default", "p")
    store.apply([Event(EventType.DELETED, key, store.get_key(key), "3", 1)])
    t = tr.update(store, {key})
    assert _headers(t) is None
    assert key not in t.statuses


def test_unrelated_changes_keep_the_policy() -> None:
    pol = tp("p", [ref("HTTPRoute", "r")], requestLimits={"maxRequestHeaders": 5})
    store = store_of(base() + [pol])
    tr = Translator()
    tr.update(store, set())
    svc = copy.deepcopy(store.get("Service", "default", "svc"))
    svc["metadata"]["labels"] = {"x": "y"}
    assert _headers(tr.update(store, _put(store, svc))) == 5
