"""Fixtures for the L7 proxy tests: echo backends as subprocesses, a plane run on a
background event loop, and small HTTP helpers (blocking clients, as a user would)."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, eventually, free_port  # noqa: F401 - re-exported to the l7 tests


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{host}:{port} never accepted")


class Echo:
    """A ``kgw echo`` subprocess; ``log_path`` collects its stdout."""

    def __init__(self, pod: str, tmp: Path, namespace: str = "infra") -> None:
        self.pod = pod
        self.port = free_port()
        self.log_path = tmp / f"{pod}.log"
        self._log = open(self.log_path, "w")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kgw_l7.echo", "--address", "127.0.0.1", "--port",
             str(self.port), "--pod", pod, "--namespace", namespace],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def echoes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Echo]]:
    tmp = tmp_path_factory.mktemp("echo")
    procs = {name: Echo(f"{name}-abc-123", tmp) for name in ("v1", "v2", "v3")}
    try:
        for e in procs.values():
            wait_port("127.0.0.1", e.port)
        yield procs
    finally:
        for e in procs.values():
            e.stop()


class PlaneRunner:
    """Runs an L7Plane on an event loop in a thread so tests can stay synchronous."""

    def __init__(self, **kwargs: Any) -> None:
        from kgw_l7.plane import L7Plane

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.plane = L7Plane(**kwargs)
        self.call(self.plane.start())

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def apply(self, config: Any) -> None:
        self.call(self.plane.apply(config))

    def metrics(self) -> str:
        return self.call(self.plane.metrics()).decode()

    def close(self) -> None:
        try:
            self.call(self.plane.close(1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


class Resp:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, path: str, method: str = "GET", host: str | None = None,
            headers: dict[str, str] | list[tuple[str, str]] | None = None,
            body: bytes | None = None, conn: http.client.HTTPConnection | None = None,
            timeout: float = 10.0, addr: str = "127.0.0.1") -> Resp:
    own = conn is None
    c = conn or http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        c.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        c.putheader("Host", host or f"{addr}:{port}")
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        for k, v in items:
            c.putheader(k, v)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return Resp(r.status, r.getheaders(), r.read())
    finally:
        if own:
            c.close()


def raw(port: int, data: bytes, timeout: float = 5.0, read_all: bool = True,
        addr: str = "127.0.0.1") -> bytes:
    """Send raw bytes, return everything until the server closes (or timeout)."""
    with socket.create_connection((addr, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
                if not read_all:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def self_signed(names: list[str]) -> tuple[str, str]:
    """A throwaway certificate (PEM) for ``names`` and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


class Client:
    """``request`` over HTTP/1.1 or HTTP/2 (prior knowledge, the h2 library): the
    ``send`` fixture runs a test whose protocol does not matter once with each."""

    def __init__(self, proto: str) -> None:
        self.proto = proto

    def __call__(self, port: int, path: str, **kw: Any) -> Any:
        if self.proto == "HTTP/2":
            from .h2client import h2_request
            return h2_request(port, path, **kw)
        return request(port, path, **kw)

    def connect(self, port: int, timeout: float = 10.0) -> Any:
        """A connection for ``conn=``: several requests on one client connection."""
        if self.proto == "HTTP/2":
            from .h2client import H2Client
            return H2Client(port, timeout=timeout)
        return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


@pytest.fixture(params=["HTTP/1.1", "HTTP/2"])
def send(request: pytest.FixtureRequest) -> Client:
    return Client(request.param)
