"""The standalone "cluster" the Ingress features run against: one ``kgw run`` serving a
config directory, with kgw's default IngressClass, and ``kgw echo`` processes as the
suite's echo Deployments (upstream-go/kubernetes/templates: Service port -> targetPort
3000, POD_NAME, NAMESPACE, INGRESS_NAME, SERVICE_NAME set).

Each pod listens on its own loopback address (127.3.X.Y:3000), so one EndpointSlice per
Service lists them all. Each scenario writes one file (``<namespace>.yaml``) and removes
it at its end, waiting until kgw no longer reports its Ingress.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
ECHO_PORT = 3000  # the suite's containerPort
START_TIMEOUT_S = 20.0
STATUS_TIMEOUT_S = 30.0
Obj = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s" + (f" ({last!r})" if last else ""))


def self_signed(hosts: list[str]) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM), as upstream's generateRSACert: RSA 2048, the hosts as SANs."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


@dataclass
class Pod:
    name: str
    address: str
    proc: subprocess.Popen[bytes]


@dataclass
class Scenario:
    """One scenario's namespace and what it put in the world."""

    namespace: str
    ingress: Obj | None = None
    secrets: list[Obj] = field(default_factory=list)
    services: dict[str, Obj] = field(default_factory=dict)
    pods: dict[str, list[Pod]] = field(default_factory=dict)


class Kgw:
    """``kgw run`` on a config directory; Ingress ports from the IngressClass's parameters
    (free ports: the machine's 80 and 443 may be taken)."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kgw-ingress-conformance-"))
        self.config = self.workdir / "config"
        self.config.mkdir(parents=True, exist_ok=True)
        self.admin = f"127.0.0.1:{free_port()}"
        self.ports = {"http": free_port(), "https": free_port()}
        self.proc: subprocess.Popen[bytes] | None = None
        self._next_pod = 0

    def start(self) -> None:
        base = [
            {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
             "metadata": {"name": "kgw", "annotations": {
                 "ingressclass.kubernetes.io/is-default-class": "true"}},
             "spec": {"controller": "kgw.dev/ingress-controller",
                      "parameters": {"apiGroup": "", "kind": "ConfigMap",
                                     "namespace": "kgw-system", "name": "ingress",
                                     "scope": "Namespace"}}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "ingress", "namespace": "kgw-system"},
             "data": {"httpPort": str(self.ports["http"]),
                      "httpsPort": str(self.ports["https"])}},
        ]
        self.write("00-base", base)
        cmd = [sys.executable, "-m", "controller.cli", "run", "-c", str(self.config),
               "--admin-address", self.admin, "--access-log", "off", "--l4-mode", "userspace"]
        with open(self.workdir / "kgw.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        eventually(self.ready, START_TIMEOUT_S, "kgw ready")

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"kgw run exited with status {self.proc.returncode}")
        with urllib.request.urlopen(f"http://{self.admin}/readyz", timeout=2) as r:
            return bool(r.status == 200)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def write(self, name: str, docs: list[Obj]) -> None:
        """Atomically: the file source never reads half a file."""
        tmp = self.config / f".{name}.tmp"
        tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        os.replace(tmp, self.config / f"{name}.yaml")

    def remove(self, name: str) -> None:
        (self.config / f"{name}.yaml").unlink(missing_ok=True)

    def status_of(self, namespace: str, name: str) -> Obj | None:
        with urllib.request.urlopen(f"http://{self.admin}/status", timeout=5) as r:
            items = json.loads(r.read()).get("items") or []
        for it in items:
            meta = it.get("metadata") or {}
            if (it.get("kind"), meta.get("namespace"), meta.get("name")) == (
                    "Ingress", namespace, name):
                return dict(it.get("status") or {})
        return None

    def config_dump(self) -> Obj:
        with urllib.request.urlopen(f"http://{self.admin}/config_dump", timeout=5) as r:
            return dict(json.loads(r.read()))

    # -- echo pods ---------------------------------------------------------------------

    def start_pod(self, sc: Scenario, service: str) -> Pod:
        self._next_pod += 1
        n = self._next_pod
        address = f"127.3.{n // 250}.{n % 250 + 1}"
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = f"{service}-{suffix}"
        ingress = ((sc.ingress or {}).get("metadata") or {}).get("name", "")
        cmd = [sys.executable, "-m", "kgw_l7.echo", "--address", address, "--port",
               str(ECHO_PORT), "--pod", name, "--namespace", sc.namespace, "--service", service,
               "--ingress", ingress, "--quiet"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        pod = Pod(name, address, proc)
        sc.pods.setdefault(service, []).append(pod)

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"echo pod {name} exited with status {proc.returncode}")
            with urllib.request.urlopen(f"http://{address}:{ECHO_PORT}/health", timeout=2) as r:
                return bool(r.status == 200)
        eventually(healthy, START_TIMEOUT_S, f"echo pod {name} healthy")
        return pod

    def stop_pods(self, sc: Scenario) -> None:
        for pods in sc.pods.values():
            for p in pods:
                if p.proc.poll() is None:
                    p.proc.send_signal(signal.SIGTERM)
            for p in pods:
                try:
                    p.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.proc.kill()
                    p.proc.wait(timeout=5)
        sc.pods.clear()

    # -- the scenario's objects ------------------------------------------------------------

    def objects(self, sc: Scenario) -> list[Obj]:
        out: list[Obj] = [*sc.secrets]
        for name, svc in sorted(sc.services.items()):
            out.append(svc)
            port = svc["spec"]["ports"][0]
            out.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-slice", "namespace": sc.namespace,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": port.get("name", ""), "port": ECHO_PORT, "protocol": "TCP"}],
                "endpoints": [{"addresses": [p.address], "conditions": {"ready": True},
                               "targetRef": {"kind": "Pod", "name": p.name,
                                             "namespace": sc.namespace}}
                              for p in sc.pods.get(name, [])]})
        if sc.ingress is not None:
            out.append(sc.ingress)
        return out

    def publish(self, sc: Scenario) -> None:
        self.write(sc.namespace, self.objects(sc))

    def forget(self, sc: Scenario) -> None:
        self.remove(sc.namespace)
        if sc.ingress is not None:
            name = sc.ingress["metadata"]["name"]
            eventually(lambda: self.status_of(sc.namespace, name) is None, STATUS_TIMEOUT_S,
                       f"Ingress {sc.namespace}/{name} gone from kgw's status")
        self.stop_pods(sc)


def backends(ingress: Obj) -> dict[str, tuple[str, int]]:
    """Service name -> (port name, port number) of every service backend, as upstream's
    DeploymentsFromIngress creates them (a port without number is 8080)."""
    out: dict[str, tuple[str, int]] = {}
    spec = ingress.get("spec") or {}
    refs = [spec.get("defaultBackend")]
    for rule in spec.get("rules") or []:
        refs.extend(p.get("backend") for p in ((rule.get("http") or {}).get("paths") or []))
    for ref in refs:
        svc = (ref or {}).get("service")
        if svc:
            port = svc.get("port") or {}
            out.setdefault(svc["name"], (port.get("name", ""), port.get("number") or 8080))
    return out


def service(namespace: str, name: str, port_name: str, port: int) -> Obj:
    p: Obj = {"port": port, "targetPort": ECHO_PORT, "protocol": "TCP"}
    if port_name:
        p["name"] = port_name
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "NodePort", "selector": {"app": name}, "ports": [p]}}
