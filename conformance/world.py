"""The standalone "cluster": the directory ``kgw run`` serves, and the echo pods.

Objects are written one file per test (``tests/<Test>.yaml``) beside the base files, by
atomic rename, so the file source never reads half a file. EndpointSlices for every
Service that selects echo pods live in one generated file, rewritten when pods come or go.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conformance.backends import EchoFleet, Pod, services_selecting
from conformance.loader import (AddressBook, Obj, dump_yaml, endpoint_slice, gateway_class,
                                is_coredns_deployment, is_echo_deployment, key_of, read_manifest,
                                rewrite_gateway)

log = logging.getLogger("conformance.world")

#: Kinds whose objects get a status from kgw (what /status lists).
STATUS_KINDS = frozenset({"GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute",
                          "TCPRoute",
                          "UDPRoute", "BackendTLSPolicy", "ListenerSet", "XListenerSet"})
SKIP_READINESS_ANNOTATION = "gateway-api/skip-this-for-readiness"

Key = tuple[str, str, str]


@dataclass
class Applied:
    """What one file put into the world: objects kgw reads, and the pods started for it."""

    name: str
    objects: list[Obj]
    pods: list[Pod] = field(default_factory=list)
    deployments: list[Obj] = field(default_factory=list)


class World:
    def __init__(self, workdir: Path, fleet: EchoFleet, *, secrets: list[Obj],
                 wants: Callable[[Obj], bool] = lambda deployment: True) -> None:
        self.workdir = workdir
        self.config = workdir / "config"
        (self.config / "tests").mkdir(parents=True, exist_ok=True)
        self.fleet = fleet
        self.book = AddressBook()
        self.files: dict[str, Applied] = {}
        self.secret_objects = secrets
        self.wants = wants  # which echo Deployments to run (others only serve skipped profiles)
        self.manual_endpoints: dict[tuple[str, str], Callable[[], list[tuple[str, str]]]] = {}

    # -- what is applied ----------------------------------------------------------

    def objects(self) -> list[Obj]:
        return [o for a in self.files.values() for o in a.objects]

    def services(self) -> list[Obj]:
        return [o for o in self.objects() if o.get("kind") == "Service"]

    def secrets(self) -> dict[tuple[str, str], Obj]:
        return self._of_kind("Secret", self.objects())

    def configmaps(self) -> dict[tuple[str, str], Obj]:
        return self._of_kind("ConfigMap", self.objects())

    @staticmethod
    def _of_kind(kind: str, objects: list[Obj]) -> dict[tuple[str, str], Obj]:
        return {(k[1], k[2]): o for o in objects if (k := key_of(o))[0] == kind}

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        """Whether the object is applied (what the API server would return on a Get)."""
        return any(key_of(o) == (kind, namespace, name) for o in self.objects())

    def gateways_in(self, namespaces: list[str]) -> list[Obj]:
        """The Gateways applied in these namespaces (what upstream lists)."""
        return [o for o in self.objects() if o.get("kind") == "Gateway"
                and (o.get("metadata") or {}).get("namespace", "default") in namespaces]

    def gateway_listeners(self, nn: tuple[str, str]) -> list[Obj]:
        for o in self.objects():
            if key_of(o) == ("Gateway", nn[0], nn[1]):
                return list((o.get("spec") or {}).get("listeners") or [])
        return []

    def skip_readiness(self) -> set[tuple[str, str]]:
        out = set()
        for o in self.objects():
            meta = o.get("metadata") or {}
            if o.get("kind") == "Gateway" and (meta.get("annotations")
                                               or {}).get(SKIP_READINESS_ANNOTATION) == "true":
                out.add((meta.get("namespace") or "", meta.get("name", "")))
        return out

    def pods_ready(self, namespaces: list[str]) -> str | None:
        """Upstream NamespacesMustBeReady's pod half: each namespace has pods, all ready
        (here: running)."""
        running = {p.namespace for p in self.fleet.pods()}
        for ns in namespaces:
            if ns not in running:
                return f"No pods deployed yet in namespace {ns}"
        dead = [p for p in self.fleet.dead() if p.namespace in namespaces]
        if dead:
            return f"echo pods not running: {', '.join(p.namespace + '/' + p.name for p in dead)}"
        return None

    # -- changes -----------------------------------------------------------------

    def setup_base(self, base_manifest: Path) -> Applied:
        objs = [gateway_class(), *copy.deepcopy(self.secret_objects), *read_manifest(base_manifest)]
        return self.apply("00-base", objs)

    def apply(self, name: str, docs: list[Obj]) -> Applied:
        """Write ``docs`` as file ``name`` (replacing its previous content): Gateways get
        addresses, echo Deployments become pods (started before the file is written, so
        endpoints are ready when routes appear)."""
        previous = self.files.get(name)
        objects, deployments = [], []
        for d in docs:
            if is_echo_deployment(d) or is_coredns_deployment(d):
                if self.wants(d):
                    deployments.append(d)
            elif d.get("kind") == "Deployment":
                continue  # no stand-in for it: nothing in kgw reads Deployments
            elif d.get("kind") == "Gateway":
                objects.append(rewrite_gateway(d, self.book))
            else:
                objects.append(copy.deepcopy(d))
        applied = Applied(name, objects, deployments=deployments)
        if previous is not None and [key_of(d) for d in previous.deployments] == [
            key_of(d) for d in deployments]:
            applied.pods = previous.pods  # same Deployments: keep the pods running
        else:
            if previous is not None:
                self.fleet.stop(previous.pods)
            secrets = {**self.secrets(), **self._of_kind("Secret", objects)}
            configmaps = {**self.configmaps(), **self._of_kind("ConfigMap", objects)}
            try:
                for dep in deployments:
                    applied.pods.extend(self.fleet.start(dep, secrets, configmaps))
            except BaseException:
                # earlier Deployments of this file; start() cleans its own
                self.fleet.stop(applied.pods)
                raise
        self.files[name] = applied
        self._write(self._path(name), objects)
        self._write_endpoints()
        return applied

    def remove(self, name: str) -> Applied | None:
        applied = self.files.pop(name, None)
        if applied is None:
            return None
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            pass
        self.fleet.stop(applied.pods)
        self._write_endpoints()
        return applied

    def _path(self, name: str) -> Path:
        return self.config / f"{name}.yaml" if name.startswith(
            "00-") else self.config / "tests" / f"{name}.yaml"

    def _write(self, path: Path, objects: list[Obj]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(dump_yaml(objects))
        os.replace(tmp, path)

    def _write_endpoints(self) -> None:
        services = self.services()
        pods = self.fleet.pods()
        slices = []
        for svc in services:
            meta = svc["metadata"]
            key = (meta.get("namespace", "default"), meta["name"])
            if key in self.manual_endpoints:
                continue
            selected = [p for p in pods if svc in services_selecting(p, [svc])]
            if (svc.get("spec") or {}).get("selector"):
                slices.append(endpoint_slice(svc, [(p.name, p.address) for p in selected]))
        self._write(self.config / "00-endpoints.yaml", slices)

    def fill_manual_endpoint_slices(self, name: str, namespace: str, deployment: str) -> None:
        """Selector-less Services whose EndpointSlices a test writes by hand, leaving the
        addresses for the test to fill in (upstream HTTPRouteServiceTypes fills the IPv4
        slices with the pods of ``deployment``). IPv6 slices stay empty: loopback has one
        IPv6 address, so there is no per-pod IPv6 address to give."""
        applied = self.files[name]
        pods = self.fleet.pods_of(namespace, deployment)
        changed = False
        for o in applied.objects:
            if o.get("kind") == "EndpointSlice" and o.get("addressType") == "IPv4" and not o.get(
                "endpoints"):
                o["endpoints"] = [{"addresses": [p.address], "conditions": {"ready": True},
                                   "targetRef": {"kind": "Pod", "name": p.name,
                                                 "namespace": p.namespace}}
                                  for p in pods]
                changed = True
        if changed:
            self._write(self._path(name), applied.objects)

    def rewrite(self, name: str) -> None:
        """Write a file again after its objects were changed in place (a mid-test update)."""
        self._write(self._path(name), self.files[name].objects)

    def status_keys(self, name: str) -> set[Key]:
        applied = self.files.get(name)
        return {key_of(o) for o in applied.objects
                if o.get("kind") in STATUS_KINDS} if applied else set()

    def close(self) -> None:
        self.fleet.stop_all()
