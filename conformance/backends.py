"""Echo pods: every replica of an echo Deployment becomes one ``kgw echo`` process.

Each pod gets its own loopback address (127.2.D.R), so target ports are the manifest's
own (3000...). Pod names are shaped like Kubernetes' (``<deployment>-<hash>-<hash>``),
because the suite identifies backends by pod-name prefix and by dropping the last two
dash-separated parts. NAMESPACE and POD_NAME are set as the Downward API would set them,
and Secret volumes are emulated by writing the Secret's items into the pod's directory.
Containers with ``TCP_ECHO_SERVER`` set run the echo's TCP mode (echo-basic's tcpserver:
a line protocol on TCP_PORT, and over TLS on TLS_PORT when given a certificate).
Containers with ``UDP_ECHO_SERVER`` set run its UDP mode on UDP_PORT (8080, the suite's
UDP containerPort); such a pod is ready when it answers a datagram.
Containers with ``GRPC_ECHO_SERVER`` set run its gRPC mode (the suite's GrpcEcho service)
on HTTP_PORT (3000), and over TLS on HTTPS_PORT (8443) with TLS_SERVER_CERT and
TLS_SERVER_PRIV_KEY. HTTP echo pods also serve h2c on H2C_PORT (3001), as echo-basic does
(the port HTTPRouteBackendProtocolH2C routes to).
The ``coredns`` Deployment (CoreDNS image, ``-conf`` a Corefile from a ConfigMap volume)
runs ``conformance.dns_backend`` on that Corefile; it is ready when it answers a query.
ConfigMap volumes are written like Secret volumes.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query

from conformance import requests as rq
from conformance.loader import Obj, container_env, is_coredns_deployment, pod_labels

log = logging.getLogger("conformance.backends")

#: Characters Kubernetes uses in generated name suffixes (k8s.io/apimachinery rand.String).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
ECHO_HTTP_PORT = 3000
ECHO_H2C_PORT = 3001  # echo-basic's H2C_PORT
ECHO_HTTPS_PORT = 8443  # echo-basic's HTTPS_PORT (its gRPC mode's TLS port too)
ECHO_UDP_PORT = 8080  # the containerPort of the suite's UDP echo Deployments
START_TIMEOUT_S = 20.0


def pod_names(deployment: str, replicas: int, rng: random.Random) -> list[str]:
    """Names as a Deployment's ReplicaSet would give its pods: one template hash, one
    random suffix per pod."""
    template_hash = "".join(rng.choice(NAME_ALPHABET) for _ in range(10))
    names: list[str] = []
    while len(names) < replicas:
        name = (
            f"{deployment}-{template_hash}-{''.join(rng.choice(NAME_ALPHABET) for _ in range(5))}")
        if name not in names:
            names.append(name)
    return names


def backend_of_pod(pod: str) -> str:
    """Upstream's weighted tests (extractBackendName): the backend is the pod name minus
    its last two dash-separated parts; a name with fewer than three parts is itself."""
    parts = pod.split("-")
    return pod if len(parts) < 3 else "-".join(parts[:-2])


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    deployment: str
    address: str
    labels: dict[str, str] = field(hash=False, compare=False)


@dataclass
class _Running:
    pod: Pod
    proc: subprocess.Popen[bytes]
    log_path: Path
    ports: tuple[int, ...] = (ECHO_HTTP_PORT,)  # what the pod listens on once started
    udp: bool = False  # the ports are UDP (the echo's UDP mode)
    dns: bool = False  # a DNS server on UDP (the coredns stand-in)


def echo_command(env: dict[str, str], address: str, pod: str,
                 namespace: str) -> tuple[list[str], tuple[int, ...]]:
    """The ``kgw echo`` arguments for a container with environment ``env``, and the ports
    the pod will listen on. echo-basic serves HTTP unless ``TCP_ECHO_SERVER`` is set; then
    it serves its TCP line protocol on ``TCP_PORT`` (3000) and, with ``TLS_SERVER_CERT``
    and ``TLS_SERVER_PRIV_KEY``, the same over TLS on ``TLS_PORT`` (8443). With
    ``UDP_ECHO_SERVER`` it answers datagrams on ``UDP_PORT`` (8080) instead. With
    ``GRPC_ECHO_SERVER`` it serves the gRPC echo on ``HTTP_PORT`` (3000) and, with
    ``TLS_SERVER_CERT`` and ``TLS_SERVER_PRIV_KEY``, over TLS on ``HTTPS_PORT`` (8443).
    The HTTP echo also serves h2c on ``H2C_PORT`` (3001)."""
    base = ["-m", "controller.cli", "echo", "--address", address, "--pod", pod, "--namespace",
            namespace]
    if env.get("UDP_ECHO_SERVER"):
        udp_port = _env_port(env, "UDP_PORT", ECHO_UDP_PORT)
        return base + ["--udp-port", str(udp_port)], (udp_port,)
    if env.get("GRPC_ECHO_SERVER"):
        grpc_port, tls_port = _env_port(env, "HTTP_PORT", ECHO_HTTP_PORT), _env_port(
            env, "HTTPS_PORT", ECHO_HTTPS_PORT)
        args = base + ["--grpc-port", str(grpc_port), "--tls-port", str(tls_port)]
        if env.get("TLS_SERVER_CERT") and env.get("TLS_SERVER_PRIV_KEY"):
            return args, (grpc_port, tls_port)
        return args, (grpc_port,)
    if not env.get("TCP_ECHO_SERVER"):
        h2c_port = _env_port(env, "H2C_PORT", ECHO_H2C_PORT)
        return base + ["--port", str(ECHO_HTTP_PORT), "--h2c-port", str(h2c_port)], (ECHO_HTTP_PORT,
                                                                                     h2c_port)
    tcp_port, tls_port = _env_port(env, "TCP_PORT", 3000), _env_port(env, "TLS_PORT", 8443)
    args = base + ["--tcp-port", str(tcp_port), "--tls-port", str(tls_port)]
    if env.get("TLS_SERVER_CERT") and env.get("TLS_SERVER_PRIV_KEY"):
        return args, (tcp_port, tls_port)
    return args, (tcp_port,)


def coredns_command(deployment: Obj, address: str,
                    files: dict[str, Path]) -> tuple[list[str], tuple[int, ...]]:
    """The ``conformance.dns_backend`` arguments for the suite's CoreDNS Deployment: its
    ``-conf`` path, mapped to where the ConfigMap volume was written (``files``: mount
    path -> directory), and the ports the Corefile's server blocks listen on."""
    from conformance.dns_backend import CorefileError, parse_corefile

    container = (deployment["spec"]["template"]["spec"].get("containers") or [{}])[0]
    args = [str(a) for a in container.get("args") or []]
    conf = args[args.index("-conf") + 1] if "-conf" in args[:-1] else "/etc/coredns/Corefile"
    local = _local_path(conf, files)
    if local is None:
        raise RuntimeError(f"coredns -conf {conf} is not in a volume the harness wrote")
    try:
        blocks = parse_corefile(local.read_text())
    except (OSError, CorefileError, ValueError) as exc:
        raise RuntimeError(f"coredns Corefile {conf}: {exc}") from exc
    return (["-m", "conformance.dns_backend", "--address", address, "--conf", str(local)],
            tuple(sorted({b.port for b in blocks})))


def _local_path(path: str, files: dict[str, Path]) -> Path | None:
    for mount, directory in files.items():
        prefix = mount.rstrip("/") + "/"
        if path.startswith(prefix):
            return directory / path[len(prefix):]
    return None


def _env_port(env: dict[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name) or default)
    except ValueError:
        raise RuntimeError(f"non-integer value in {name}: {env[name]!r}") from None


class EchoFleet:
    """Starts, tracks and stops echo pods. ``python`` runs ``-m controller.cli echo``."""

    def __init__(self, workdir: Path, *, python: str = sys.executable, cwd: Path | None = None,
                 seed: int | None = None) -> None:
        self.workdir = workdir
        self.python = python
        self.cwd = cwd
        self.rng = random.Random(seed)
        self._deployment_index: dict[tuple[str, str], int] = {}
        self._running: dict[tuple[str, str], _Running] = {}  # (namespace, pod) -> process

    # -- pods ------------------------------------------------------------------

    def pods(self) -> list[Pod]:
        return [r.pod for r in self._running.values()]

    def pods_of(self, namespace: str, deployment: str) -> list[Pod]:
        return [p for p in self.pods() if p.namespace == namespace and p.deployment == deployment]

    def _address(self, namespace: str, deployment: str, replica: int) -> str:
        key = (namespace, deployment)
        if key not in self._deployment_index:
            self._deployment_index[key] = len(self._deployment_index) + 1
        idx = self._deployment_index[key]
        if idx > 250 or replica > 250:
            raise RuntimeError("too many echo deployments for the 127.2.0.0/16 plan")
        return f"127.2.{idx}.{replica + 1}"

    def start(self, deployment: Obj, secrets: dict[tuple[str, str], Obj],
              configmaps: dict[tuple[str, str], Obj] | None = None) -> list[Pod]:
        """Start every replica of ``deployment``; return the pods once they accept connections."""
        meta = deployment["metadata"]
        ns, name = meta.get("namespace", "default"), meta["name"]
        replicas = int((deployment.get("spec") or {}).get("replicas", 1))
        started: list[Pod] = []
        try:
            self._start_replicas(deployment, ns, name, replicas, secrets, configmaps or {}, started)
            for pod in started:
                self._wait_listening(pod)
        except BaseException:
            self.stop(started)  # a Deployment starts whole or not at all
            raise
        return started

    def _start_replicas(self, deployment: Obj, ns: str, name: str, replicas: int,
                        secrets: dict[tuple[str, str], Obj], configmaps: dict[tuple[str, str], Obj],
                        started: list[Pod]) -> None:
        for i, pod_name in enumerate(pod_names(name, replicas, self.rng)):
            pod = Pod(pod_name, ns, name, self._address(ns, name, i), pod_labels(deployment))
            files: dict[str, Path] = {}
            pod_env = self._pod_env(deployment, pod, secrets, configmaps, files)
            dns_pod = is_coredns_deployment(deployment)
            if dns_pod:
                args, ports = coredns_command(deployment, pod.address, files)
            else:
                args, ports = echo_command(pod_env, pod.address, pod_name, ns)
            udp = dns_pod or bool(pod_env.get("UDP_ECHO_SERVER"))
            for port in ports:
                _ensure_free(pod.address, port, udp=udp)
            env = {**os.environ, **pod_env, "NAMESPACE": ns, "POD_NAME": pod_name}
            log_path = self.workdir / "logs" / f"{ns}.{pod_name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as out:
                proc = subprocess.Popen([self.python, *args], env=env, stdout=out,
                                        stderr=subprocess.STDOUT,
                                        cwd=self.cwd, start_new_session=True)
            self._running[(ns, pod_name)] = _Running(pod, proc, log_path, ports, udp, dns_pod)
            started.append(pod)

    def _pod_env(self, deployment: Obj, pod: Pod, secrets: dict[tuple[str, str], Obj],
                 configmaps: dict[tuple[str, str], Obj], files: dict[str, Path]) -> dict[str, str]:
        """The container's literal env, with paths into Secret and ConfigMap volumes
        pointed at files written for this pod (``files`` gets mount path -> directory)."""
        env = container_env(deployment)
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        mounts = (spec.get("containers") or [{}])[0].get("volumeMounts") or []
        for mount in mounts:
            vol = volumes.get(mount.get("name"), {})
            if (vol.get("secret") or {}).get("secretName"):
                source = vol["secret"]
                obj = secrets.get((pod.namespace, source["secretName"])) or {}
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            elif (vol.get("configMap") or {}).get("name"):
                source = vol["configMap"]
                obj = configmaps.get((pod.namespace, source["name"])) or {}
                data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
            else:
                continue
            target = self.workdir / "pods" / pod.namespace / pod.name / mount["name"]
            target.mkdir(parents=True, exist_ok=True)
            files[mount["mountPath"]] = target
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] in data:
                    (target / item["path"]).write_bytes(data[item["key"]])
            for k, v in list(env.items()):
                if v.startswith(mount["mountPath"].rstrip("/") + "/"):
                    env[k] = str(target / v[len(mount["mountPath"].rstrip("/")) + 1:])
        return env

    def _wait_listening(self, pod: Pod) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        run = self._running[(pod.namespace, pod.name)]
        waiting = list(run.ports)
        while time.monotonic() < deadline:
            if run.proc.poll() is not None:
                tail = run.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"echo pod {pod.namespace}/{pod.name} exited with {run.proc.returncode}: "
                    f"{tail}")
            if run.dns:
                if not _dns_answers(pod.address, waiting[0]):
                    time.sleep(0.05)
                    continue
            elif run.udp:
                if rq.udp_probe(f"{pod.address}:{waiting[0]}", timeout=0.5) is not None:
                    time.sleep(0.05)
                    continue
            else:
                try:
                    with socket.create_connection((pod.address, waiting[0]), timeout=0.5):
                        pass
                except OSError:
                    time.sleep(0.05)
                    continue
            waiting.pop(0)
            if not waiting and run.proc.poll() is None:
                return
        raise RuntimeError(f"echo pod {pod.namespace}/{pod.name} did not listen on {pod.address}:"
                           f"{waiting[0] if waiting else run.ports[-1]} within "
                           f"{START_TIMEOUT_S:.0f}s")

    def stop(self, pods: Iterable[Pod]) -> None:
        runs = [self._running.pop((p.namespace, p.name)) for p in pods
                if (p.namespace, p.name) in self._running]
        for r in runs:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in runs:
            try:
                r.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()

    def stop_all(self) -> None:
        self.stop(self.pods())

    # -- observations -------------------------------------------------------------

    def dead(self) -> list[Pod]:
        return [r.pod for r in self._running.values() if r.proc.poll() is not None]

    def log_has(self, namespace: str, deployment: str, needle: str) -> bool:
        """Whether any pod of the deployment logged a line containing ``needle``."""
        for r in self._running.values():
            if r.pod.namespace == namespace and r.pod.deployment == deployment:
                try:
                    if needle in r.log_path.read_text(errors="replace"):
                        return True
                except OSError:
                    pass
        return False

    def log_count(self, namespace: str, deployment: str, needle: str) -> int:
        total = 0
        for r in self._running.values():
            if r.pod.namespace == namespace and r.pod.deployment == deployment:
                try:
                    total += r.log_path.read_text(errors="replace").count(needle)
                except OSError:
                    pass
        return total


def _dns_answers(address: str, port: int) -> bool:
    try:
        dns.query.udp(dns.message.make_query(".", "NS"), address, port=port, timeout=0.5)
        return True
    except (dns.exception.DNSException, OSError):
        return False


def _ensure_free(address: str, port: int, *, udp: bool = False) -> None:
    """Refuse to start a pod on an address something else already serves: connecting to
    it would look like our pod being ready (another conformance run in this network
    namespace is the usual cause; ``--isolate`` runs in a namespace of its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM) as s:
        if not udp:  # for UDP, SO_REUSEADDR would let the bind share a bound port
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            raise RuntimeError(f"{address}:{port} is already in use ({exc.strerror}); is another "
                               "conformance "
                               "run using this network namespace? (use --isolate)") from exc


def services_selecting(pod: Pod, services: Iterable[Obj]) -> list[Obj]:
    out = []
    for svc in services:
        meta = svc.get("metadata") or {}
        sel: dict[str, Any] = (svc.get("spec") or {}).get("selector") or {}
        if meta.get("namespace", "default") == pod.namespace and sel and all(
                pod.labels.get(k) == v for k, v in sel.items()):
            out.append(svc)
    return out
