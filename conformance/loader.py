"""Reading the suite (cases and manifests) and rewriting manifests for standalone kgw.

What a cluster would provide is replaced here, in plain data, before anything runs:

- ``{GATEWAY_CLASS_NAME}`` / ``{GATEWAY_CONTROLLER_NAME}`` become kgw's class and
  controller name (a GatewayClass of that name is part of the base files);
- each Gateway gets its own loopback address through ``spec.addresses`` (type
  IPAddress), so that several Gateways can listen on port 80 at once; the static
  address placeholders become that address and one no interface holds;
- Deployments are not given to kgw (it does not read them): they become echo pods,
  started by :mod:`conformance.backends`, and the Services selecting them get
  EndpointSlices pointing at those pods.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

GATEWAY_CLASS_NAME = "kgw"
CONTROLLER_NAME = "kgw.dev/gateway-controller"
GATEWAY_GROUP = "gateway.networking.k8s.io"

#: The first address handed to Gateways; each Gateway gets the next one.
GATEWAY_ADDRESS_BASE = ipaddress.IPv4Address("127.1.0.1")

Obj = dict[str, Any]


class SuiteError(Exception):
    """The suite directory is missing or malformed."""


@dataclass(frozen=True)
class TestCase:
    """One upstream test, as recorded in ``cases/<name>.json``."""

    __test__ = False  # not a pytest test class

    name: str
    features: tuple[str, ...]
    profiles: dict[str, str]  # profile -> "core" | "extended"
    provisional: bool
    manifests: tuple[Path, ...]
    description: str
    record: dict[str, Any] = field(repr=False, compare=False)

    @property
    def status_checks(self) -> list[dict[str, Any]]:
        return list(self.record.get("statusChecks") or [])

    @property
    def request_groups(self) -> list[dict[str, Any]]:
        return list(self.record.get("requestGroups") or [])


@dataclass(frozen=True)
class Suite:
    root: Path
    tests: tuple[TestCase, ...]
    base_manifest: Path

    def get(self, name: str) -> TestCase:
        for t in self.tests:
            if t.name == name:
                return t
        raise KeyError(name)


def load_suite(root: str | Path) -> Suite:
    """Read ``cases/*.json`` of a suite directory (tests sorted by name, as upstream)."""
    root = Path(root)
    cases_dir = root / "cases"
    base = root / "manifests" / "base" / "manifests.yaml"
    if not cases_dir.is_dir() or not base.is_file():
        raise SuiteError(f"{root}: not a conformance suite directory (needs cases/ and "
                         "manifests/base/manifests.yaml)")
    tests = []
    for path in sorted(cases_dir.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except ValueError as exc:
            raise SuiteError(f"{path}: {exc}") from exc
        manifests = tuple(_manifest_path(root, m) for m in rec.get("manifests") or [])
        tests.append(TestCase(
            name=rec["test"], features=tuple(rec.get("features") or ()),
            profiles=dict(rec.get("profiles") or {}), provisional=bool(rec.get("provisional")),
            manifests=manifests, description=rec.get("description", ""), record=rec))
    tests.sort(key=lambda t: t.name)
    return Suite(root=root, tests=tuple(tests), base_manifest=base)


def _manifest_path(root: Path, recorded: str) -> Path:
    """Cases name manifests as upstream paths (``conformance/tests/x.yaml``)."""
    name = recorded.rsplit("/", 1)[-1]
    if "/base/" in recorded:
        return root / "manifests" / "base" / name
    return root / "manifests" / "tests" / name


def read_manifest(path: Path) -> list[Obj]:
    """The documents of a manifest file with the suite's placeholders filled in."""
    text = path.read_text()
    text = text.replace("{GATEWAY_CLASS_NAME}", GATEWAY_CLASS_NAME)
    text = text.replace("{GATEWAY_CONTROLLER_NAME}", CONTROLLER_NAME)
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def key_of(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("kind", ""), meta.get("namespace") or "", meta.get("name") or ""


def gateway_class() -> Obj:
    return {"apiVersion": f"{GATEWAY_GROUP}/v1", "kind": "GatewayClass",
            "metadata": {"name": GATEWAY_CLASS_NAME},
            "spec": {"controllerName": CONTROLLER_NAME}}


class AddressBook:
    """Loopback addresses for Gateways: one per Gateway, stable for the whole run."""

    def __init__(self, base: ipaddress.IPv4Address = GATEWAY_ADDRESS_BASE) -> None:
        self._next = base
        self._given: dict[tuple[str, str], str] = {}

    def address(self, namespace: str, name: str) -> str:
        key = (namespace, name)
        if key not in self._given:
            addr = self._next
            if not addr.is_loopback:
                raise SuiteError("ran out of loopback addresses for Gateways")
            self._given[key] = str(addr)
            nxt = addr + 1
            if int(nxt) & 0xFF in (0, 255):  # skip .0 and .255 for readability
                nxt = ipaddress.IPv4Address((int(nxt) | 0xFF) + 2)
            self._next = nxt
        return self._given[key]


#: The address pools upstream's suite takes as flags (UsableNetworkAddresses,
#: UnusableNetworkAddresses), for Gateways naming PLACEHOLDER_USABLE_ADDRS /
#: PLACEHOLDER_UNUSABLE_ADDRS (GatewayStaticAddresses). Usable: the Gateway's own loopback
#: address (kgw can bind it). Unusable: an address of TEST-NET-3 (RFC 5737), which no
#: interface of the run's network namespace holds (``World`` checks it cannot be bound).
UNUSABLE_ADDRESS = "203.0.113.254"
INVALID_ADDRESS_TYPE = "test/fake-invalid-type"


def rewrite_gateway(obj: Obj, book: AddressBook) -> Obj:
    """Give a Gateway its own loopback address unless the manifest already names addresses
    (the tests about spec.addresses keep theirs). Placeholders are overlaid as upstream's
    applier does (``prepareGateway``): the special invalid-type addresses first, then the
    unusable pool, then the usable one; nothing else of the manifest's addresses is kept."""
    out = copy.deepcopy(obj)
    spec = out.setdefault("spec", {})
    meta = out.get("metadata") or {}
    own = {"type": "IPAddress",
           "value": book.address(meta.get("namespace") or "default", meta.get("name", ""))} \
        if not spec.get("addresses") or _has_placeholders(spec["addresses"]) else None
    if not spec.get("addresses"):
        spec["addresses"] = [own]
    elif own is not None:
        addrs = spec["addresses"]
        overlay = [a for a in addrs if isinstance(a, dict)
                   and a.get("type") == INVALID_ADDRESS_TYPE]
        if any(isinstance(a, dict) and a.get("value") == "PLACEHOLDER_UNUSABLE_ADDRS"
               for a in addrs):
            overlay.append({"type": "IPAddress", "value": UNUSABLE_ADDRESS})
        if any(isinstance(a, dict) and a.get("value") == "PLACEHOLDER_USABLE_ADDRS" for a in addrs):
            overlay.append(own)
        spec["addresses"] = overlay
    return out


def _has_placeholders(addresses: Any) -> bool:
    return isinstance(addresses, list) and any(
        isinstance(a, dict)
        and (a.get("value") in ("PLACEHOLDER_USABLE_ADDRS", "PLACEHOLDER_UNUSABLE_ADDRS")
             or a.get("type") == INVALID_ADDRESS_TYPE) for a in addresses)


def is_echo_deployment(obj: Obj) -> bool:
    """Deployments running the upstream echo image (not coredns, which serves UDP tests)."""
    if obj.get("kind") != "Deployment":
        return False
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec")
                  or {}).get("containers") or []
    return any("echo-basic" in (c.get("image") or "") for c in containers)


def is_coredns_deployment(obj: Obj) -> bool:
    """The suite's CoreDNS Deployment (UDPRoute's DNS backend)."""
    if obj.get("kind") != "Deployment":
        return False
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec")
                  or {}).get("containers") or []
    return any("coredns/coredns" in (c.get("image") or "") for c in containers)


def container_env(deployment: Obj) -> dict[str, str]:
    """Literal env values of the Deployment's first container (fieldRefs are the pod's own)."""
    containers = deployment["spec"]["template"]["spec"].get("containers") or [{}]
    return {e["name"]: str(e["value"]) for e in containers[0].get("env") or [] if "value" in e}


def pod_labels(deployment: Obj) -> dict[str, str]:
    return dict(((deployment["spec"].get("template") or {}).get("metadata") or {}).get("labels")
                or {})


def endpoint_slice(service: Obj, endpoints: Iterable[tuple[str, str]]) -> Obj:
    """An EndpointSlice for ``service`` (as the EndpointSlice controller would write it):
    ``endpoints`` are (pod name, address); ports are named as the Service's ports and
    carry the target port (each pod has its own address, so target ports are real)."""
    meta = service["metadata"]
    ports = []
    for p in (service.get("spec") or {}).get("ports") or []:
        target = p.get("targetPort", p.get("port"))
        if not isinstance(target, int):
            continue  # named target ports would need the container's port list
        port: Obj = {"name": p.get("name", ""), "port": target,
                     "protocol": p.get("protocol", "TCP")}
        if p.get("appProtocol"):
            port["appProtocol"] = p["appProtocol"]
        ports.append(port)
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{meta['name']}-kgwconf",
                     "namespace": meta.get("namespace", "default"),
                     "labels": {"kubernetes.io/service-name": meta["name"]}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [{"addresses": [addr], "conditions": {"ready": True},
                       "targetRef": {"kind": "Pod", "name": pod,
                                     "namespace": meta.get("namespace", "default")}}
                      for pod, addr in endpoints],
    }


def dump_yaml(objs: Iterable[Obj]) -> str:
    return yaml.safe_dump_all(list(objs), sort_keys=False)
