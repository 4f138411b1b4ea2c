"""Which API version serves each kind: asked of the API server, newest version first.

A cluster may carry the Gateway API CRDs of any release, standard or experimental
channel; kgw reads each kind at the newest version (in ``Kind.versions`` order) that the
server actually serves, and reports a kind it does not serve at all (a CRD not
installed) without stopping the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kubernetes import client

from controller.kube.client import get_json, status_code
from controller.objects import Kind


@dataclass(frozen=True, slots=True)
class Served:
    kind: Kind
    version: str

    @property
    def api_version(self) -> str:
        return f"{self.kind.group}/{self.version}" if self.kind.group else self.version

    def collection(self, namespace: str = "") -> str:
        """The list/watch path: all namespaces (or cluster-scoped) unless ``namespace``."""
        base = (f"/apis/{self.kind.group}/{self.version}" if self.kind.group
                else f"/api/{self.version}")
        ns = f"/namespaces/{namespace}" if namespace and self.kind.namespaced else ""
        return f"{base}{ns}/{self.kind.plural}"

    def item(self, namespace: str, name: str) -> str:
        return f"{self.collection(namespace)}/{name}"


def _group_version_path(group: str, version: str) -> str:
    return f"/apis/{group}/{version}" if group else f"/api/{version}"


def discover(api: client.ApiClient, kinds: Iterable[Kind]) -> tuple[dict[str, Served],
                                                                    dict[str, str]]:
    """Return (kind name -> what serves it, kind name -> why it is not served).

    Raises on anything but "not served" (the server unreachable, forbidden…), so the
    caller can retry rather than conclude a CRD is missing.
    """
    documents: dict[tuple[str, str], set[str] | None] = {}

    def resources(group: str, version: str) -> set[str] | None:
        if (group, version) not in documents:
            try:
                doc = get_json(api, _group_version_path(group, version))
                documents[(group, version)] = {
                    r.get("name", "") for r in doc.get("resources") or () if isinstance(r, dict)}
            except Exception as exc:
                if status_code(exc) != 404:
                    raise
                documents[(group, version)] = None
        return documents[(group, version)]

    served: dict[str, Served] = {}
    missing: dict[str, str] = {}
    for kind in kinds:
        for version in kind.versions:
            found = resources(kind.group, version)
            if found is not None and kind.plural in found:
                served[kind.kind] = Served(kind, version)
                break
        else:
            tried = ", ".join(_group_version_path(kind.group,
                                                  v).removeprefix("/apis/").removeprefix("/api/")
                              for v in kind.versions)
            what = "the Gateway API CRD is not installed" if kind.group.endswith(
                "gateway.networking.k8s.io") \
                else "not served by this API server"
            missing[kind.kind] = f"{kind.kind} ({kind.plural}) is not served at {tried}: {what}; " \
                                 f"kgw works without it and looks again periodically"
    return served, missing
