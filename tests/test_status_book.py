from __future__ import annotations

from controller.objects import ObjectKey
from controller.status import StatusBook

GW = ObjectKey("Gateway", "ns", "gw")


def cond(type_: str, status: str, reason: str = "R") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": "",
            "observedGeneration": 1}


def test_transition_time_kept_while_status_unchanged() -> None:
    times = iter(["t1", "t2", "t3"])
    book = StatusBook(clock=lambda: next(times))
    assert book.update({GW: {"conditions": [cond("Accepted", "True")],
                             "listeners": [{"name": "http",
                                            "conditions": [cond("Programmed", "True")]}]}}) == {GW}
    # reason changes, status does not: time stays; listener condition flips: time moves
    assert book.update({GW: {"conditions": [cond("Accepted", "True", "Other")],
                             "listeners": [{"name": "http",
                                            "conditions": [cond("Programmed", "False")]}]}}) == {GW}
    status = book.get(GW)
    assert status["conditions"][0]["lastTransitionTime"] == "t1"
    assert status["listeners"][0]["conditions"][0]["lastTransitionTime"] == "t2"


def test_unchanged_status_is_not_reported_and_removed_is() -> None:
    book = StatusBook(clock=lambda: "t")
    s = {GW: {"conditions": [cond("Accepted", "True")]}}
    book.update(s)
    assert book.update(s) == set()
    assert book.update({}) == {GW}
    assert book.get(GW) is None


def test_as_list_has_kubernetes_shape() -> None:
    book = StatusBook(clock=lambda: "t")
    book.update({GW: {"conditions": [cond("Accepted", "True")]}})
    obj = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": "gw", "namespace": "ns", "generation": 3}}
    out = book.as_list(lambda k: obj if k == GW else None)
    (item,) = out["items"]
    assert out["kind"] == "List"
    assert item["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert item["metadata"] == {"name": "gw", "namespace": "ns", "generation": 3}
    assert item["status"]["conditions"][0]["lastTransitionTime"] == "t"
