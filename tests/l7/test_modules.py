"""kgw_l7's imports go one way (docs/l7.md): every module imports on its own in a fresh
interpreter, compiled and interpreted, and the supervisor side loads none of the
per-request modules."""

from __future__ import annotations

import ast
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kgw_l7
from tests.helpers import ROOT

#: kgw_l7's one Cython source (not Python): libnghttp2's HPACK, imported by hpack_codec
#: only when compiled (tests/l7/test_hpack_nghttp2.py); in LAYERS, built or not.
PYX = "_nghttp2"
MODULES = sorted(m.name for m in pkgutil.iter_modules(kgw_l7.__path__) if m.name != PYX)
#: The modules in import order (docs/l7.md): each may import, or cimport in its .pxd,
#: only modules listed before it.
LAYERS = ["_cython", "auth_config", "config", "balance", "breaker", "regex", "session",
          "proxyproto", "proxyaccept", "snapshot", "logformat", "tracing_config", "otlplogs",
          "ratetable", "problems", "events", "extauth", "ratelimit", "redisconn", "globallimit",
          "h1", "auth", "oidc", "router", "stats", "accesslog", "tls_fallback", "tls", "streams",
          "tracing", "_nghttp2", "hpack_codec", "upstream_h2", "upstream", "channel", "context",
          "authcall", "exchange", "downstream_h2", "proxy", "worker", "__main__", "metrics",
          "healthcheck", "plane", "protoc", "echo"]
#: What a worker runs per request (and the worker process itself).
PER_REQUEST = {"balance", "breaker", "events", "extauth", "authcall", "ratelimit",
               "redisconn", "globallimit", "h1", "auth", "oidc", "router", "accesslog",
               "streams", "tracing", "hpack_codec", "upstream_h2", "upstream", "context",
               "exchange", "downstream_h2", "proxy", "proxyaccept", "worker"}


def run(code: str, compiled: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "KGW_NO_EXTENSIONS": "0" if compiled else "1"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "interpreted"])
def test_every_module_imports_on_its_own(compiled):
    if compiled and not kgw_l7.build_is_fresh():
        pytest.skip("no fresh compiled build (scripts/build_ext.py)")
    assert {"context", "channel", "exchange", "proxy", "streams", "worker"} <= set(MODULES)
    procs = {m: run(f"import kgw_l7.{m} as m; print(m.__file__)", compiled) for m in MODULES}
    failed = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        if proc.returncode:
            failed[name] = err.strip().splitlines()[-1]
            continue
        built = not out.strip().endswith(".py")
        assert built == (compiled and name in kgw_l7.COMPILED_MODULES), (name, out)
    assert not failed


def test_the_supervisor_side_imports_no_per_request_module():
    code = ("import sys, kgw_l7.plane; "
            "print(' '.join(m[7:] for m in sys.modules if m.startswith('kgw_l7.')))")
    out, err = run(code, compiled=kgw_l7.build_is_fresh()).communicate(timeout=60)
    assert "plane" in out.split(), err
    assert not set(out.split()) & PER_REQUEST


def kgw_l7_imports(path: Path) -> set[str]:
    """The kgw_l7 modules a .py imports or a .pxd cimports."""
    if path.suffix == ".pxd":
        return set(re.findall(r"^from kgw_l7\.(\w+) cimport", path.read_text(), re.M))
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "kgw_l7":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kgw_l7."):
            found.add(node.module.split(".")[1])  # type: ignore[union-attr]
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("kgw_l7.")}
    return found


def test_imports_go_one_way():
    assert sorted(LAYERS) == sorted([*MODULES, PYX]), \
        "place a new module in LAYERS (and docs/l7.md)"
    package = Path(kgw_l7.__file__).parent
    upward = {}
    for name in MODULES:
        for path in (package / f"{name}.py", package / f"{name}.pxd"):
            if path.exists():
                later = {m for m in kgw_l7_imports(path)
                         if LAYERS.index(m) >= LAYERS.index(name)}
                if later:
                    upward[path.name] = sorted(later)
    assert not upward
