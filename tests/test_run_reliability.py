"""`kgw run` with every default (a private host, tests/netns.py) under configuration faults:
a relative -c path, the directory moved away and back, signals, a maximum-size file.
Each runs sequential requests through the gateway meanwhile and counts the failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, eventually, http_get
from tests.netns import Host, kgw_argv

pytestmark = pytest.mark.slow

ADMIN = "http://127.0.0.1:9095"
BACKENDS = (("store-v1", 9101), ("store-v2", 9102), ("search", 9103))
REWRITE = "replaceFullPath: /api/v1/search"


def search(timeout: float = 5.0) -> dict:
    req = urllib.request.Request("http://127.0.0.1:8080/search",
                                 headers={"Host": "shop.example.com"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class Load:
    """Sequential requests through the gateway, from a thread inside the host, until stopped."""

    def __init__(self, host: Host) -> None:
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=host.call, args=(self._run,), daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if search()["pod"].startswith("search-"):
                    self.ok += 1
                else:
                    self.failed.append("wrong backend")
            except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
                self.failed.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _start(host: Host, tmp_path: Path, config: str, cwd: Path) -> tuple[subprocess.Popen, Path]:
    for name, port in BACKENDS:
        host.popen(kgw_argv("echo", "--port", str(port), "--pod", f"{name}-x", "--namespace",
                            "demo"),
                   stdout=subprocess.DEVNULL)
    log = tmp_path / "kgw.log"
    kgw = host.popen(kgw_argv("run", "-c", config), cwd=cwd, stdout=subprocess.DEVNULL,
                     stderr=log.open("wb"))
    eventually(lambda: host.call(http_get, f"{ADMIN}/readyz")[0] == 200, timeout=30)
    eventually(lambda: host.call(search), timeout=10)
    return kgw, log


def _problems(host: Host) -> list[dict]:
    code, body = host.call(http_get, f"{ADMIN}/problems")
    assert code == 200, body
    return json.loads(body)["problems"]


def _rewritten(host: Host, version: str) -> bool:
    return host.call(search)["path"] == f"/api/{version}/search"


def test_relative_config_path_goes_live_on_every_edit(host: Host, tmp_path: Path) -> None:
    """README's `kgw run -c examples/`, run from the directory holding the copy."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    kgw, log = _start(host, tmp_path, "examples/", cwd=tmp_path)
    routes = tmp_path / "examples" / "routes.yaml"
    text = routes.read_text()
    slow = []
    for i in range(2, 12):
        routes.write_text(text.replace(REWRITE, f"replaceFullPath: /api/v{i}/search"))  # in place
        started = time.monotonic()
        eventually(lambda: _rewritten(host, f"v{i}"), timeout=10, interval=0.02)  # noqa: B023
        if time.monotonic() - started > 3:
            slow.append((i, round(time.monotonic() - started, 1)))
    assert slow == [], f"edits live after more than 3 s: {slow}"
    assert _problems(host) == []
    assert kgw.poll() is None


def test_directory_moved_away_and_back_fails_no_request(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    kgw, log = _start(host, tmp_path, str(conf), cwd=ROOT)
    load = Load(host)
    try:
        time.sleep(0.5)
        conf.rename(tmp_path / "away")
        missing = eventually(
            lambda: [p for p in _problems(host) if "directory is missing" in p["message"]])
        assert missing[0]["origin"] == str(conf)
        code, body = host.call(http_get, f"{ADMIN}/readyz")
        assert code == 200 and b"serving the last good configuration" in body, body
        time.sleep(1.5)
        (tmp_path / "away").rename(conf)
        eventually(lambda: _problems(host) == [])
        # watched again at once: an edit is live within a fraction of a second, not at the rescan
        routes = conf / "routes.yaml"
        routes.write_text(routes.read_text().replace(REWRITE, "replaceFullPath: /api/v9/search"))
        eventually(lambda: _rewritten(host, "v9"), timeout=3, interval=0.02)
        time.sleep(0.5)
    finally:
        load.stop()
    assert load.ok > 100 and load.failed == [], (load.ok, load.failed[:5])
    assert kgw.poll() is None


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_signals_stop_nothing_and_sighup_rereads(host: Host, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    kgw, log = _start(host, tmp_path, str(conf), cwd=ROOT)
    kids = _children(kgw.pid)
    workers = [p for p in kids if "kgw_l7 worker" in _cmdline(p)]
    assert workers and len(workers) == (os.cpu_count() or 1), [_cmdline(p) for p in kids]
    everyone = [kgw.pid, *kids]
    load = Load(host)
    try:
        time.sleep(0.5)
        for pid in everyone:
            for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGPIPE):
                os.kill(pid, sig)
                time.sleep(0.05)
        time.sleep(0.5)
        # SIGHUP re-reads files the watcher cannot tell apart: same size, inode and mtime
        routes = conf / "routes.yaml"
        st = routes.stat()
        with routes.open("r+") as f:
            f.write(routes.read_text().replace(REWRITE, "replaceFullPath: /api/v7/search"))
        os.utime(routes, ns=(st.st_atime_ns, st.st_mtime_ns))
        time.sleep(1.0)
        assert _rewritten(host, "v1")  # (the watcher saw a change to a file that did not change)
        for _ in range(3):
            os.kill(kgw.pid, signal.SIGHUP)
            time.sleep(0.3)
        eventually(lambda: _rewritten(host, "v7"), timeout=5)
        time.sleep(0.5)
    finally:
        load.stop()
    for pid in everyone:
        assert Path(f"/proc/{pid}").exists() and "(Z)" not in Path(f"/proc/{pid}/stat").read_text()[
            :64], pid
    assert load.ok > 100 and load.failed == [], (load.ok, load.failed[:5])
    text = log.read_text()
    assert "SIGHUP: re-reading the configuration" in text and "SIGUSR1 received" in text
    assert kgw.poll() is None


def test_admin_api_answers_while_a_maximum_size_file_is_read(host: Host, tmp_path: Path) -> None:
    """A maximum-size file (28,000 routes): read in a child process, merged, translated and
    its statuses stamped in threads; /readyz keeps answering throughout (before: the
    event loop stopped for the whole read, ~8 s)."""
    from controller.yamlload import MAX_FILE_BYTES

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    kgw, log = _start(host, tmp_path, str(conf), cwd=ROOT)
    big = tmp_path / "big.yaml"
    big.write_text(big_routes(MAX_FILE_BYTES, "{name: demo, namespace: demo}"))
    latencies: list[float] = []

    def objects() -> float:
        body = http_get(f"{ADMIN}/metrics")[1].decode()
        line = next(x for x in body.splitlines() if x.startswith("kgw_source_objects "))
        return float(line.split()[1])

    def probe() -> None:
        before = objects()
        deadline = time.monotonic() + 120
        while objects() < before + 1000:
            assert time.monotonic() < deadline, "the file was not read in 120 s"
            started = time.monotonic()
            code, body = http_get(f"{ADMIN}/readyz", timeout=60)
            latencies.append(time.monotonic() - started)
            assert code == 200, body
            time.sleep(0.02)

    load = Load(host)
    try:
        shutil.move(big, conf / "big.yaml")
        host.call(probe)
    finally:
        load.stop()
    assert len(latencies) > 20 and max(latencies) < 1.0, \
        f"/readyz took up to {max(latencies):.2f}s while the file was read " \
        f"({len(latencies)} probes)"
    assert load.failed == [], load.failed[:5]
    assert _problems(host) == []
    assert kgw.poll() is None


def big_routes(size: int, parent: str = "{name: nowhere}") -> str:
    """HTTPRoutes up to ``size`` bytes, each with its own hostname."""
    parts: list[str] = []
    total = n = 0
    while True:
        doc = (f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
               f"metadata: {{name: big-{n}, namespace: big}}\nspec:\n  parentRefs: [{parent}]\n"
               f"  hostnames: [h{n}.example.com]\n  rules:\n"
               f"  - matches: [{{path: {{type: PathPrefix, value: /a/{n}}}}}]\n"
               f"    backendRefs: [{{name: svc, port: 80}}]\n")
        if total + len(doc) > size:
            return "".join(parts)
        parts.append(doc)
        total += len(doc)
        n += 1
