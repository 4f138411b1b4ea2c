"""Small worlds with kgw policies, for the policy tests."""

from __future__ import annotations

from typing import Any

from controller.objects import ObjectKey
from controller.translate import Translation, translate
from tests.translate.worlds import CLASS, gateway, http_route, service, slice_, store_of

G = "gateway.networking.k8s.io"


def ref(kind: str, name: str, section: str = "", group: str = G, **extra: str) -> dict:
    r: dict[str, Any] = {"group": group, "kind": kind, "name": name, **extra}
    if section:
        r["sectionName"] = section
    return r


def tp(name: str, refs: list[dict], created: str = "", ns: str = "default",
       kind: str = "TrafficPolicy", **sections: Any) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "gateway.kgw.dev/v1alpha1", "kind": kind, "metadata": meta,
            "spec": {"targetRefs": refs, **sections}}


def base(listeners: list[dict] | None = None) -> list[dict]:
    """Gateway gw (listeners http :80 and other :81), HTTPRoute r with rules a (named) and
    an unnamed one, attached to both listeners, and its backend."""
    return [CLASS,
            gateway("gw", listeners or [{"name": "http", "port": 80, "protocol": "HTTP"},
                                        {"name": "other", "port": 81, "protocol": "HTTP"}]),
            http_route("r", [{"name": "gw"}], rules=[
                {"name": "a", "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
                 "backendRefs": [{"name": "svc", "port": 80}]},
                {"backendRefs": [{"name": "svc", "port": 80}]}]),
            service("svc"), slice_("svc", ["10.0.0.1"])]


def run(objs: list[dict]) -> Translation:
    return translate(store_of(objs))


def rule_policies(t: Translation, port: int = 80) -> dict[str, Any]:
    """rule name -> its RulePolicy (None: none), on the listener bound to ``port``."""
    lis = next(x for x in t.l7.listeners if x.port == port)
    return {r.rule.name: r.rule.policy for vh in lis.virtual_hosts for r in vh.routes}


def ancestors(t: Translation, name: str, kind: str = "TrafficPolicy",
              ns: str = "default") -> list[tuple[str, str, str]]:
    """(ancestor kind/name, reason, message) of a policy's status."""
    st = t.statuses.get(ObjectKey(kind, ns, name))
    if st is None:
        return []
    return [(f"{a['ancestorRef']['kind']}/{a['ancestorRef']['name']}",
             a["conditions"][0]["reason"], a["conditions"][0]["message"])
            for a in st["ancestors"]]
