"""Compile kgw_l7's per-request modules with Cython (optional speed-up).

The sources stay plain Python (``kgw_l7/COMPILED_MODULES``); each ``.pxd`` next to them
declares the ``__slots__`` classes as extension types. Without a C compiler, Python
headers or Cython, nothing is built and kgw runs the same code interpreted
(``kgw_l7.extension_in_use`` tells which). Run by ``scripts/setup.sh``; rebuilds (all
of them) when a .py or .pxd changed. ``KGW_NO_EXTENSIONS=1`` skips it.

``kgw_l7/_nghttp2.pyx`` (HPACK from libnghttp2, ``kgw_l7.hpack_codec``) is a Cython source
of its own, linked with ``-lnghttp2``: built after the others, and when libnghttp2's headers
(Debian ``libnghttp2-dev``) are missing only it is left out (HTTP/2 then uses the hpack
package's codec).

Usage: ``.venv/bin/python scripts/build_ext.py [--force]``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    if os.environ.get("KGW_NO_EXTENSIONS", "") not in ("", "0"):
        print("build_ext: KGW_NO_EXTENSIONS is set, nothing built")
        return 0
    import kgw_l7

    if "--force" not in argv and kgw_l7.build_is_fresh():
        return build_pyx("--force" in argv)
    # All or nothing: the .pxd files cimport each other, so one changed declaration
    # changes the layout other modules were compiled against.
    names = list(kgw_l7.COMPILED_MODULES)
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as exc:
        print(f"build_ext: {exc}; kgw_l7 runs interpreted", file=sys.stderr)
        return 0
    print(f"build_ext: compiling kgw_l7.{{{','.join(names)}}} with Cython")
    os.chdir(ROOT)
    exts = [Extension(f"kgw_l7.{m}", [f"kgw_l7/{m}.py"]) for m in names]
    try:
        modules = cythonize(exts, language_level=3, quiet=True, force="--force" in argv,
                            nthreads=os.cpu_count() or 1, compiler_directives={
                                # Annotations are for mypy and readers; typing C
                                # variables from them would change str/bytes semantics.
                                "annotation_typing": False,
                                "binding": True,
                            })
        # A bare Distribution: the project's pyproject.toml is not read (pip owns it).
        cmd = Distribution({"name": "kgw-speedups", "ext_modules": modules}) \
            .get_command_obj("build_ext")
        cmd.inplace = True
        cmd.build_temp = "build/ext"
        cmd.parallel = os.cpu_count() or 1
        cmd.ensure_finalized()
        cmd.run()
    except (Exception, SystemExit) as exc:  # a compiler error must not fail the set-up
        print(f"build_ext: compilation failed ({exc}); kgw_l7 runs interpreted",
              file=sys.stderr)
        for m in names:
            for so in (ROOT / "kgw_l7").glob(f"{m}.*.so"):
                so.unlink()
        return 0
    for m in names:  # make the freshly built file newer than its sources for certain
        so = kgw_l7.extension_path(m)
        if so is not None:
            os.utime(so)
    _remove_strays(set(names) | {NGHTTP2})
    return build_pyx(True)


#: The Cython extension wrapping libnghttp2 (a .pyx: its source is Cython, not Python).
NGHTTP2 = "_nghttp2"

#: Extensions written in Cython (.pyx), each built on its own: (package, module,
#: libraries, what kgw does without it).
PYX_EXTENSIONS = (
    ("kgw_l7", NGHTTP2, ["nghttp2"], "HTTP/2 uses the hpack package (is libnghttp2-dev "
                                     "installed?)"),
    ("kgw_l4", "_pairrelay", [], "TLS passthrough splices every connection from the start"),
)


def build_pyx(force: bool) -> int:
    """Build each of PYX_EXTENSIONS when it is missing or older than its source; any
    failure leaves that one out (and says why), never the rest."""
    for package, name, libraries, without in PYX_EXTENSIONS:
        _build_one_pyx(package, name, libraries, without, force)
    return 0


def _extension_file(package: str, name: str) -> Path | None:
    import importlib.machinery

    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = ROOT / package / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def _build_one_pyx(package: str, name: str, libraries: list[str], without: str,
                   force: bool) -> None:
    pyx = ROOT / package / f"{name}.pyx"
    so = _extension_file(package, name)
    if not force and so is not None and so.stat().st_mtime >= pyx.stat().st_mtime:
        return
    try:
        from Cython.Build import cythonize
        from setuptools import Distribution, Extension
    except ImportError as exc:
        print(f"build_ext: {exc}; {without}", file=sys.stderr)
        return
    print(f"build_ext: compiling {package}.{name} with Cython")
    os.chdir(ROOT)
    ext = Extension(f"{package}.{name}", [f"{package}/{name}.pyx"], libraries=libraries)
    try:
        modules = cythonize([ext], language_level=3, quiet=True, force=force)
        cmd = Distribution({"name": f"kgw-{name.strip('_')}", "ext_modules": modules}) \
            .get_command_obj("build_ext")
        cmd.inplace = True
        cmd.build_temp = "build/ext"
        cmd.ensure_finalized()
        cmd.run()
    except (Exception, SystemExit) as exc:
        print(f"build_ext: {package}.{name} not built ({exc}); {without}", file=sys.stderr)
        for stale in (ROOT / package).glob(f"{name}.*.so"):
            stale.unlink()
        return
    so = _extension_file(package, name)
    if so is not None:
        os.utime(so)


def _remove_strays(compiled: set[str]) -> None:
    """Extensions (and their C files) of modules an older build compiled and this one does
    not: never imported (kgw_l7's finder skips them), but confusing to find."""
    for so in (ROOT / "kgw_l7").glob("*.so"):
        name = so.name.split(".", 1)[0]
        if name not in compiled:
            so.unlink()
            c = ROOT / "kgw_l7" / f"{name}.c"
            if c.exists():
                c.unlink()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
