"""Protocol Buffers modules compiled when they are first loaded, from the ``.proto``
files kept in the repository, by grpcio-tools' protoc running in this process.

Why not commit the generated ``_pb2.py`` / ``_pb2_grpc.py``: generated code is tied to
the versions that made it (protobuf's generated code refuses an older runtime, and
grpcio-tools' stubs refuse a grpcio older than the tools), so committed code breaks
when pip picks other versions. grpcio-tools itself requires a grpcio and a protobuf
that match what it generates, so code generated here, at load time, always fits the
installed runtime; nothing generated is kept on disk (a temporary directory, removed
once the modules are imported), so nothing can be stale. It costs ~50 ms per
``.proto`` per process.

Used by ``kgw echo --grpc-port`` (``grpcecho.proto``), the conformance harness's gRPC
client, and the gRPC test fixtures (``tests/grpcsvc.proto``).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

_LOCK = threading.Lock()
_LOADED: dict[Path, tuple[ModuleType, ModuleType]] = {}

MISSING = ("gRPC needs grpcio, grpcio-tools and protobuf: pip install 'kgw[grpc]' "
           "(scripts/setup.sh installs them)")


class ProtoError(Exception):
    """A .proto file could not be compiled or loaded (the message says which and why)."""


def load(proto: str | Path) -> tuple[ModuleType, ModuleType]:
    """The generated messages module (``<stem>_pb2``) and services module
    (``<stem>_pb2_grpc``) of ``proto``, compiled on first use; later calls in this
    process return the same modules (a descriptor may be registered only once).

    The modules are registered in ``sys.modules`` under those names, as generated code
    imports its messages module by name. Raises ProtoError (grpcio-tools missing,
    protoc errors, a name already taken by another file)."""
    path = Path(proto).resolve()
    with _LOCK:
        if path in _LOADED:
            return _LOADED[path]
        try:
            from grpc_tools import protoc
        except ImportError as exc:
            raise ProtoError(f"{path.name}: {MISSING} ({exc})") from exc
        if not path.is_file():
            raise ProtoError(f"{path}: no such .proto file")
        stem = path.stem
        names = (f"{stem}_pb2", f"{stem}_pb2_grpc")
        for name in names:
            if name in sys.modules:
                raise ProtoError(f"{path}: module {name} is already loaded from another file")
        well_known = importlib.resources.files("grpc_tools") / "_proto"
        with tempfile.TemporaryDirectory(prefix="kgw-protoc-") as out:
            rc = protoc.main(["grpc_tools.protoc", f"-I{path.parent}", f"-I{well_known}",
                              f"--python_out={out}", f"--grpc_python_out={out}", path.name])
            if rc != 0:
                raise ProtoError(f"{path}: protoc failed (exit status {rc}; its messages are "
                                 f"on stderr)")
            modules = tuple(_import(name, Path(out) / f"{name}.py") for name in names)
        _LOADED[path] = modules  # type: ignore[assignment]
        return _LOADED[path]


def _import(name: str, file: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ProtoError(f"cannot import generated module {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ProtoError(f"generated module {name}: {exc!r}") from exc
    return module
