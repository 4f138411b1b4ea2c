"""Load the upstream conformance manifests (as data, outside the repo) into a Store."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from controller.objects import KINDS, ObjectKey
from controller.source import Event, EventType
from controller.store import SERVICE_NAME_LABEL, Store

CLASS_NAME = "kgw"


def conformance_dir() -> Path | None:
    env = os.environ.get("KGW_CONFORMANCE_DIR")
    d = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "conformance"
    return d if (d / "cases").is_dir() else None


def load_yaml(path: Path) -> list[dict]:
    text = path.read_text().replace("{GATEWAY_CLASS_NAME}", CLASS_NAME).replace(
        "{GATEWAY_CONTROLLER_NAME}", "kgw.dev/gateway-controller")
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


INFRA = "gateway-conformance-infra"


def suite_generated() -> list[dict]:
    """Secrets and CA ConfigMaps the upstream suite creates at setup (not in YAML)."""
    from tests.translate.tlsgen import ca_configmap, tls_secret

    out = [tls_secret(n, INFRA) for n in (
        "tls-validity-checks-certificate", "tls-terminate-checks-certificate",
        "tls-passthrough-checks-certificate", "tls-checks-client-certificate")]
    out.append(tls_secret("certificate", "gateway-conformance-web-backend"))
    bad = tls_secret("malformed-certificate", INFRA)
    bad["data"]["tls.crt"] = "bm90IGEgY2VydA=="  # "not a cert"
    out.append(bad)
    out += [ca_configmap(n, INFRA) for n in (
        "tls-checks-ca-certificate", "tls-validity-checks-ca-certificate",
        "tls-validity-checks-per-port-ca-certificate", "mismatch-ca-certificate")]
    out.append(ca_configmap("malformed-ca-certificate", INFRA, "not a certificate"))
    return out


def objects_for(case: dict, root: Path) -> list[dict]:
    objs = [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
             "metadata": {"name": CLASS_NAME},
             "spec": {"controllerName": "kgw.dev/gateway-controller"}}]
    objs += load_yaml(root / "manifests" / "base" / "manifests.yaml")
    for m in case.get("manifests", []):
        p = root / "manifests" / "tests" / Path(m).name
        if p.exists():
            objs += load_yaml(p)
    defined = {ObjectKey.of(o) for o in objs}
    objs += [o for o in suite_generated() if ObjectKey.of(o) not in defined]
    return objs


def endpoint_slice_for(svc: dict, index: int) -> dict:
    """One ready endpoint per Service, listening on each port's targetPort."""
    meta = svc["metadata"]
    ports = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        target = p.get("targetPort", p.get("port"))
        ports.append({"name": p.get("name", ""),
                      "port": target if isinstance(target, int) else p.get("port"),
                      "protocol": p.get("protocol", "TCP")})
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": meta["name"] + "-abc", "namespace": meta.get("namespace", "default"),
                     "labels": {SERVICE_NAME_LABEL: meta["name"]}, "generation": 1},
        "addressType": "IPv4", "ports": ports,
        "endpoints": [{"addresses": [f"10.1.{index // 250}.{index % 250 + 1}"],
                       "conditions": {"ready": True}}],
    }


def make_store(objs: list[dict], *, with_endpoints: bool = True) -> Store:
    prepared: dict[ObjectKey, dict] = {}
    services = []
    for i, o in enumerate(objs):
        if o.get("kind") not in KINDS:
            continue
        o = copy.deepcopy(o)
        meta = o.setdefault("metadata", {})
        if KINDS[o["kind"]].namespaced:
            meta.setdefault("namespace", "default")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z")
        prepared[ObjectKey.of(o)] = o
        if o["kind"] == "Service":
            services.append(o)
    if with_endpoints:
        for i, svc in enumerate(services):
            sl = endpoint_slice_for(svc, i)
            prepared.setdefault(ObjectKey.of(sl), sl)
    store = Store()
    store.apply(Event(EventType.ADDED, k, o, "1", 1) for k, o in prepared.items())
    return store


def gateway_addresses(store: Store) -> tuple[tuple[str, str], ...]:
    """One loopback address per Gateway, as a cluster gives each Gateway its own."""
    return tuple((f"{k.namespace}/{k.name}", f"127.0.10.{i + 1}")
                 for i, k in enumerate(store.keys("Gateway")))
