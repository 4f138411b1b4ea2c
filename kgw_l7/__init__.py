"""kgw's userspace L7 data plane (HTTP/1.1 and HTTPS reverse proxy).

Modules, from the wire up (each imports only modules listed before it, and ``config``,
``regex``, ``snapshot``; docs/l7.md):

* ``events`` -- kgw's HTTP event records; ``h1`` -- sans-IO HTTP/1.1 over httptools.
* ``ratetable`` -- the node's rate limit table in shared memory (supervisor and workers);
  ``ratelimit`` -- its token buckets, updated atomically by every worker.
* ``router`` -- ``L7Config`` compiled into matchers and prebuilt filter operations.
* ``stats`` -- counters; ``accesslog`` -- the access log; ``tls`` -- SNI certificates, backend TLS.
* ``streams`` -- the interfaces an exchange talks to its client and backend through.
* ``upstream_h2`` -- HTTP/2 backend connections, a stream per request.
* ``upstream`` -- backend connections and keep-alive pools (HTTP/1.1 or HTTP/2).
* ``channel`` -- ``WorkerOptions`` and the supervisor <-> worker frames.
* ``context`` -- ``WorkerContext`` and ``ListenerState``, shared by a worker's connections.
* ``exchange`` -- one request (routing, filters, tries, relay), whatever the protocol.
* ``downstream_h2`` -- HTTP/2 client connections and their streams.
* ``proxy`` -- client connections: HTTP/1.1, and where HTTP/2 is detected.
* ``worker`` -- one worker process.
* ``metrics`` -- Prometheus exposition of the workers' counters.
* ``plane`` -- ``L7Plane``, the supervisor's API: it imports ``channel`` and ``metrics``,
  none of the per-request modules.
* ``echo`` -- ``kgw echo``, the conformance-compatible echo backend.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path

#: Modules on the per-request path that ``scripts/build_ext.py`` compiles with Cython from
#: these same sources (declarations in the matching ``.pxd``), as aiohttp and uvloop ship
#: compiled parsers: the code is read, tested and changed as Python; the build makes the
#: struct-field attribute access that the hot path is mostly made of.
COMPILED_MODULES = ("balance", "events", "ratelimit", "h1", "auth", "router", "stats", "accesslog",
                    "streams", "tracing", "upstream_h2", "upstream", "context", "exchange",
                    "downstream_h2", "proxy")

_HERE = Path(__file__).resolve().parent


def extension_path(name: str) -> Path | None:
    """The compiled ``kgw_l7.<name>`` next to its source, if one was built."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _HERE / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def extension_in_use(name: str) -> bool:
    """Is the compiled ``kgw_l7.<name>`` the one imported? Only when extensions are not
    disabled (``KGW_NO_EXTENSIONS=1``) and every compiled module is newer than every .py
    and .pxd they are made from: the modules share declarations (a .pxd cimported by
    another), so a build is used whole or not at all, and a stale build never (edit,
    test, rebuild later)."""
    if os.environ.get("KGW_NO_EXTENSIONS", "") not in ("", "0"):
        return False
    return name in COMPILED_MODULES and build_is_fresh()


def build_is_fresh() -> bool:
    """Is there a compiled build of every module, newer than all their sources?"""
    built = []
    for name in COMPILED_MODULES:
        ext = extension_path(name)
        if ext is None:
            return False
        built.append(ext.stat().st_mtime)
    newest_source = max(src.stat().st_mtime for name in COMPILED_MODULES
                        for src in (_HERE / f"{name}.py", _HERE / f"{name}.pxd")
                        if src.exists())
    return min(built) >= newest_source


class _SourceUnlessBuilt(importlib.abc.MetaPathFinder):
    """Imports ``kgw_l7.<name>`` from its .py whenever the extension must not be used
    (the default finder would prefer any extension file next to the source), and for
    every module not in COMPILED_MODULES (an extension left from an older build that
    compiled it is never used)."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        pkg, _, name = fullname.partition(".")
        if pkg != __name__ or not name or "." in name:
            return None
        if name in COMPILED_MODULES:
            if extension_in_use(name):
                return None
        elif extension_path(name) is None:
            return None  # (the default finder: no extension file to avoid)
        source = _HERE / f"{name}.py"
        if not source.exists():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


if not any(isinstance(f, _SourceUnlessBuilt) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceUnlessBuilt())
