"""deploy/ renders with `kubectl kustomize`, and every object is a valid Kubernetes object.

Built-in kinds are checked against the ``kubernetes`` client's models: every key must be
a field of the model (walking ``openapi_types``/``attribute_map``, unknown fields
rejected), of the right type, with required fields present. Gateway API objects (no
client model) go through kgw's own validation of the CRD schema.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from kubernetes import client

from controller.objects import CONTROLLER_NAME
from controller.schema import validate
from tests.kube.manifests import DEPLOY, render

_SCALARS = {"str": str, "int": int, "bool": bool, "float": (int, float), "datetime": str,
            "date": str, "bytearray": str}


def model_errors(value: Any, type_name: str, path: str) -> list[str]:
    """Every way ``value`` fails to be a ``type_name`` (a client openapi type string)."""
    if type_name == "object":
        return []
    if type_name in _SCALARS:
        ok = isinstance(value, _SCALARS[type_name]) and not (type_name in ("int", "float")
                                                              and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {type(value).__name__}"]
    if m := re.fullmatch(r"List\[(.+)\]", type_name):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [e for i, v in enumerate(value) for e in model_errors(v, m.group(1), f"{path}[{i}]")]
    if m := re.fullmatch(r"Dict\[str, (.+)\]", type_name):
        if not isinstance(value, dict):
            return [f"{path}: expected a mapping"]
        return [e for k, v in value.items() for e in model_errors(v, m.group(1), f"{path}.{k}")]
    model = getattr(client.models, type_name, None)
    assert model is not None, f"{path}: no client model {type_name}"
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({type_name})"]
    by_json = {j: a for a, j in model.attribute_map.items()}
    errors = [f"{path}.{k}: unknown field of {type_name}" for k in value if k not in by_json]
    for k, v in value.items():
        if k in by_json:
            errors += model_errors(v, model.openapi_types[by_json[k]], f"{path}.{k}")
    for attr, f in model.model_fields.items():
        if f.is_required() and model.attribute_map[attr] not in value:
            errors.append(f"{path}.{model.attribute_map[attr]}: required by {type_name}")
    return errors


def object_errors(obj: dict[str, Any]) -> list[str]:
    group, _, version = obj["apiVersion"].rpartition("/")
    where = f"{obj['kind']} {obj['metadata'].get('name')}"
    if group.endswith("gateway.networking.k8s.io"):
        return [f"{where}: {e}" for e in validate(obj)]
    return model_errors(obj, version.capitalize() + obj["kind"], where)


def test_model_walker_rejects_unknown_and_missing_fields() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x", "labelz": {}},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "imagee": "i", "ports": [
               {"containerPort": "80"}]}]}}}}
    errors = object_errors(bad)
    assert any("metadata.labelz: unknown field" in e for e in errors)
    assert any("containers[0].imagee: unknown field" in e for e in errors)
    assert any("ports[0].containerPort: expected int" in e for e in errors)
    assert any("spec.selector: required" in e for e in errors)


def test_base_renders_valid_objects() -> None:
    docs = render(DEPLOY / "base")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "Role", "RoleBinding", "DaemonSet", "GatewayClass",
                            "CustomResourceDefinition", "CustomResourceDefinition"])
    for d in docs:
        assert object_errors(d) == [], d["kind"]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["hostNetwork"] is True
    # A node's data plane is node infrastructure: not evicted before ordinary pods under
    # memory pressure, as node networking agents (kube-proxy, CNI daemons) are not.
    assert pod["priorityClassName"] == "system-node-critical"
    assert c["securityContext"]["privileged"] is False
    assert {"BPF", "NET_ADMIN", "PERFMON",
            "SYS_RESOURCE"} <= set(c["securityContext"]["capabilities"]["add"])
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/sys/fs/bpf", "/usr/src",
                                                           "/lib/modules"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["resources"]["requests"]
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(c["ports"][0]["containerPort"])
    gc = next(d for d in docs if d["kind"] == "GatewayClass")
    assert gc["spec"]["controllerName"] == CONTROLLER_NAME and "namespace" not in gc["metadata"]
    # The args are the agent's own flags.
    from controller.cli import build_parser
    args = [a.replace("$(NODE_IP)", "10.0.0.1").replace("$(POD_NAMESPACE)", "kgw-system")
            for a in c["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "agent" and parsed.lease_namespace == "kgw-system"


def test_selected_namespaces_overlay() -> None:
    docs = render(DEPLOY / "overlays" / "selected-namespaces")
    for d in docs:
        assert object_errors(d) == [], d["kind"]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    assert "--namespace-selector=kgw.dev/gateway=enabled" in ds["spec"]["template"]["spec"][
        "containers"][0]["args"]


CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gatewayclasses.gateway.networking.k8s.io
spec:
  group: gateway.networking.k8s.io
  names: {kind: GatewayClass, listKind: GatewayClassList, plural: gatewayclasses, singular: gatewayclass}
  scope: Cluster
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""  # noqa: E501 (data)


def test_crd_overlay_with_a_local_bundle(tmp_path: Path) -> None:
    """The CRD overlay points at a remote release; a user may point it at a local file."""
    tree = tmp_path / "deploy"
    shutil.copytree(DEPLOY, tree)
    crds = tree / "overlays" / "gateway-api-crds" / "crds"
    assert "gateway-api/releases" in (crds / "kustomization.yaml").read_text()
    (crds / "standard-install.yaml").write_text(CRD)
    (crds / "kustomization.yaml").write_text("resources:\n- standard-install.yaml\n")
    docs = render(tree / "overlays" / "gateway-api-crds")
    assert "CustomResourceDefinition" in {d["kind"] for d in docs}
    for d in docs:
        assert object_errors(d) == [], d["kind"]
