"""One-way imports: the data planes never import ``controller``, and the CLI layer both
share imports none of them, however a module is reached (at import time, or by an
import inside a function, which only runs when that path is taken)."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> the top-level packages it must never import
FORBIDDEN = {
    "kgw_l4": {"controller"},
    "kgw_l7": {"controller"},
    "kgw_cli": {"controller", "kgw_l4", "kgw_l7"},
}


def modules(package: str) -> list[str]:
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        found.append(info.name)
    return sorted(set(found))


def imported_roots(path: Path, package: str) -> set[str]:
    """Top-level packages named by every import statement in ``path``, wherever it is."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add(package if node.level else (node.module or "").split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_statement_reaches_upward(package: str) -> None:
    wrong = {str(path.relative_to(ROOT)): sorted(imported_roots(path, package) & FORBIDDEN[package])
             for path in sorted((ROOT / package).rglob("*.py"))}
    assert {p: w for p, w in wrong.items() if w} == {}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_upward(package: str) -> None:
    names = modules(package)
    assert len(names) > 3, names
    forbidden = sorted(FORBIDDEN[package])
    code = (f"import importlib, sys\n"
            f"for name in {names!r}:\n"
            f"    importlib.import_module(name)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
            f"assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def test_every_controller_module_imports_first() -> None:
    """Any module of ``controller`` can be the first one a program imports: no import
    cycle that only works in one order (``controller.policy.attach`` before
    ``controller.translate`` was one)."""
    names = modules("controller")
    code = (f"import importlib, sys\n"
            f"failed = []\n"
            f"for name in {names!r}:\n"
            f"    for m in [m for m in sys.modules if m.split('.')[0] == 'controller']:\n"
            f"        del sys.modules[m]\n"
            f"    try:\n"
            f"        importlib.import_module(name)\n"
            f"    except ImportError as e:\n"
            f"        failed.append((name, str(e)))\n"
            f"assert not failed, failed\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
