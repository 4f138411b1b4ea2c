"""Shared helpers for tests that start kgw processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port number the kernel says is free for KIND (TCP by default) on HOST now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_tcp_and_udp_port(host: str = "127.0.0.1") -> int:
    """A port number free for both TCP and UDP on HOST right now (the kernel hands out
    ephemeral ports per protocol, so a free UDP port may be a busy TCP one)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind((host, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both TCP and UDP")


def kgw_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "controller.cli", *args]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def admin_json(admin: str, path: str) -> Any:
    code, body = http_get(f"http://{admin}{path}")
    assert code == 200, (path, code, body)
    return json.loads(body)


def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until check() returns a truthy value without raising; return it."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (AssertionError, OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last error: {last!r})")


@contextmanager
def running(cmd: list[str], env: dict[str, str] | None = None,
            **kwargs: Any) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def find(status_list: dict, kind: str, name: str, namespace: str = "") -> dict | None:
    for item in status_list["items"]:
        meta = item["metadata"]
        if item["kind"] == kind and meta["name"] == name and meta.get("namespace", "") == namespace:
            return item
    return None


def condition(conds: list[dict], type_: str) -> dict | None:
    return next((c for c in conds if c["type"] == type_), None)
