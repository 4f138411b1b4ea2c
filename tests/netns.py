"""A private host for tests that run ``kgw`` exactly as a user would, every flag at its default.

``kgw run -c DIR`` with no other flag listens on the admin address 127.0.0.1:9095, on the
ports its Gateways name, pins BPF objects under /sys/fs/bpf/kgw and attaches to every
interface that is up. Run that way on the test machine, two test runs (or a developer's
own kgw) would fight over those. A ``Host`` is a network namespace of its own (loopback
only, unless a test adds links), and every process it starts also gets a mount namespace
with a fresh BPF filesystem on /sys/fs/bpf: the defaults are real, and private.

The test process talks to the host through ``call``: the function runs in a thread that
joined the namespace (network namespaces are per thread), so plain sockets, urllib and
http.client work unchanged.

Root is needed (namespaces, mounts); without it the fixture skips with that reason.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tests.helpers import ROOT

T = TypeVar("T")

_seq = itertools.count()
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

#: Run inside the host: a private mount namespace, a fresh bpffs, then the command.
_PRIVATE_BPFFS = ("unshare", "--mount", "--propagation", "private", "sh", "-c",
                  'mount -t bpf bpf /sys/fs/bpf && exec "$@"', "sh")


def why_not() -> str | None:
    """Why a Host cannot be made here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    for tool in ("ip", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


class Host:
    def __init__(self) -> None:
        self.name = f"kgwt{os.getpid() % 100000}x{next(_seq)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.path = f"/run/netns/{self.name}"
        self._procs: list[subprocess.Popen[Any]] = []
        try:
            self.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    # -- processes ------------------------------------------------------------------------
    def cmd(self, *argv: str, bpffs: bool = True, beside: int | None = None) -> list[str]:
        """``argv`` as run inside the host (with a private /sys/fs/bpf unless told not;
        ``beside=PID``: in that process's mount namespace, sharing its /sys/fs/bpf)."""
        if beside is not None:
            return ["nsenter", f"--net={self.path}", f"--mount=/proc/{beside}/ns/mnt", *argv]
        inner = [*_PRIVATE_BPFFS, *argv] if bpffs else list(argv)
        return ["nsenter", f"--net={self.path}", *inner]

    def run(self, *argv: str, check: bool = True, timeout: float = 30,
            beside: int | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*argv, bpffs=False, beside=beside), check=check,
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)

    def popen(self, argv: list[str], beside: int | None = None,
              **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in the host (its PID is the command's own: nsenter, unshare and sh
        all exec). Stopped by close() if still running."""
        kwargs.setdefault("cwd", ROOT)
        proc = subprocess.Popen(self.cmd(*argv, beside=beside), **kwargs)
        self._procs.append(proc)
        return proc

    # -- the test's own sockets ---------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a thread inside the host's network namespace."""
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    if _libc.setns(fd, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns failed")
                finally:
                    os.close(fd)
                box["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=body, name=f"in-{self.name}")
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    # -- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@contextmanager
def private_host() -> Iterator[Host]:
    host = Host()
    try:
        yield host
    finally:
        host.close()


def kgw_argv(*args: str) -> list[str]:
    """The installed ``kgw`` command with ``args`` (what a user types)."""
    import sys

    exe = Path(sys.executable).with_name("kgw")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "controller.cli", *args]
