"""A real redis-server for the global rate limit's tests: on a free loopback port, no
persistence, in its own temporary directory; stop() and start() again on the same
port (Redis down mid-run, then back)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, bind: str = "127.0.0.1",
                 wrap: list[str] | None = None) -> None:
        """``wrap``: a command prefix (``nsenter --net=...``) to start it elsewhere."""
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not installed (scripts/setup.sh installs it)")
        self.workdir = workdir
        self.port = port or free_port()
        self.bind = bind
        self.wrap = wrap or []
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.bind}:{self.port}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert REDIS_SERVER is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [*self.wrap, REDIS_SERVER, "--port", str(self.port), "--bind", self.bind,
             "--protected-mode", "no", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--logfile",
             str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.ping():
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def ping(self) -> bool:
        """PING answered (from this process's network namespace unless ``wrap`` set one:
        then through redis-cli there)."""
        if self.wrap:
            r = subprocess.run([*self.wrap, "redis-cli", "-h", self.bind, "-p", str(self.port),
                                "ping"], capture_output=True, text=True, timeout=5)
            if r.stdout.strip() == "PONG":
                return True
            raise OSError(r.stderr or r.stdout)
        with socket.create_connection((self.bind, self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        """Kill it (SIGKILL: Redis dies as it would in a crash, its buckets with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
