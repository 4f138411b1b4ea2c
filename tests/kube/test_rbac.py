"""The RBAC in deploy/ allows exactly what the code calls.

One scenario drives every API call kgw makes (discovery, list and watch of every kind,
a referenced Secret, the Lease, a status write of every kind that has one) against the
fake API server, which records each request. Each request must be allowed by the
rendered ClusterRole (cluster-wide) or Role (its namespace only), and each rule (group,
resource, verb, name) must have been used by some request.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client

from controller.kube.leader import LeaderElector
from controller.kube.source import KubeSource
from controller.kube.status_writer import KubeStatusWriter
from controller.objects import KINDS, ObjectKey
from controller.status import StatusBook
from controller.store import Store
from tests.helpers import free_port
from tests.kube import objects as o
from tests.kube.conftest import FAST, until
from tests.kube.fake_apiserver import FakeAPIServer, Request
from tests.kube.manifests import base_documents

#: Kinds with a status kgw writes.
STATUS_KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute",
                "UDPRoute", "BackendTLSPolicy", "ListenerSet", "TrafficPolicy", "SecurityPolicy")


def rules(docs: list[dict[str, Any]],
          service_account: str = "kgw-agent") -> list[tuple[str, dict[str, Any]]]:
    """(namespace or "" for cluster-wide, rule) for every rule bound to the service account."""
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("ClusterRole", "Role")}
    out = []
    for b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account
                   for s in b["subjects"]):
            continue
        ns = b["metadata"].get("namespace", "") if b["kind"] == "RoleBinding" else ""
        ref = b["roleRef"]
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else "", ref["name"])]
        out.extend((ns, r) for r in role["rules"])
    return out


def resource(req: Request) -> str:
    return f"{req.resource}/{req.subresource}" if req.subresource else req.resource


def allows(rule: dict[str, Any], req: Request) -> bool:
    return (req.group in rule.get("apiGroups", ()) and resource(req) in rule.get("resources", ())
            and req.verb in rule.get("verbs", ())
            and (not rule.get("resourceNames") or req.name in rule["resourceNames"]))


def some_object(kind: str) -> dict[str, Any]:
    k = KINDS[kind]
    meta: dict[str, Any] = {"name": f"{kind.lower()}-1"}
    if k.namespaced:
        meta["namespace"] = "test"
    return {"apiVersion": f"{k.group}/{k.versions[0]}", "kind": kind, "metadata": meta, "spec": {}}


async def test_rbac_allows_exactly_what_the_code_calls(fake: FakeAPIServer,
                                                       api: client.ApiClient) -> None:
    docs = base_documents()
    bound = rules(docs)
    assert bound, "no rules bound to the kgw-agent service account"
    lease_ns = next(d for d in docs if d["kind"] == "DaemonSet")["metadata"]["namespace"]

    # Every code path: watch everything, a Gateway referencing a Secret, the Lease, and
    # a status write for every kind that has one.
    port = free_port()
    for obj in o.basic(port, free_port()):
        fake.create(obj)
    fake.update(o.gateway(port, tls_secret="cert"))
    fake.create(o.secret("cert"))
    for kind in STATUS_KINDS:
        if kind not in ("GatewayClass", "Gateway"):
            fake.create(some_object(kind))
    source = KubeSource(api, FAST)
    batches = source.batches()
    first = await asyncio.wait_for(batches.__anext__(), 10)
    assert ObjectKey("Secret", "test", "cert") in {e.key for e in first.events}
    elector = LeaderElector(api, lease_ns, "kgw-status-writer", "me", lease_duration=2,
                            renew_deadline=1, retry_period=0.2)
    run = asyncio.create_task(elector.run())
    await until(lambda: elector.is_leader)
    await asyncio.sleep(0.5)  # renew at least once
    store = Store()
    store.apply(first.events)
    writer = KubeStatusWriter(api)
    book = StatusBook()
    keys = {e.key for e in first.events if e.key.kind in STATUS_KINDS}
    assert {k.kind for k in keys} == set(STATUS_KINDS)
    book.update({k: {"conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                     "message": "", "observedGeneration": 1}]} for k in keys})
    writing = asyncio.create_task(writer.run())
    await writer.write(book, keys, store)
    await until(lambda: writer.writes == len(keys))
    await elector.stop(release=True)
    await source.close()
    for t in (run, writing):
        t.cancel()
    await asyncio.gather(run, writing, return_exceptions=True)

    requests = [q for q in fake.requests if q.verb]  # discovery needs no rule (system:discovery)
    assert all(q.path in ("/api", "/apis") or q.path.startswith(("/api/", "/apis/"))
               for q in fake.requests if not q.verb)
    denied = [q for q in requests
              if not any(allows(r, q) and (not ns or q.namespace == ns) for ns, r in bound)]
    assert not denied, [(q.verb, q.group, resource(q), q.namespace, q.name) for q in denied]

    unused = []
    for ns, r in bound:
        for group in r["apiGroups"]:
            for res in r["resources"]:
                for verb in r["verbs"]:
                    used = any(q.group == group and resource(q) == res and q.verb == verb
                               and (not ns or q.namespace == ns)
                               and (not r.get("resourceNames") or q.name in r["resourceNames"])
                               for q in requests)
                    if not used:
                        unused.append((ns, group, res, verb))
    assert not unused, f"rules no code path uses: {unused}"


def test_every_watched_kind_has_a_read_rule() -> None:
    """The static side: a kind added to KINDS without RBAC fails here, without a server."""
    bound = rules(base_documents())
    for kind in KINDS.values():
        verbs = {"get"} if kind.kind == "Secret" else {"list", "watch"}
        for verb in verbs:
            req = Request("GET", "", verb, kind.group, kind.plural)
            assert any(allows(r, req) for ns, r in bound if not ns), (kind.kind, verb)
