"""Which kgw_l7 modules are imported: the compiled build only when it is whole and newer
than every source it was made from, never when disabled (scripts/build_ext.py)."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys

import pytest

import kgw_l7
from tests.helpers import ROOT

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A fake package directory: every compiled module's .py and .pxd at time 100."""
    monkeypatch.setattr(kgw_l7, "_HERE", tmp_path)
    monkeypatch.delenv("KGW_NO_EXTENSIONS", raising=False)
    for name in kgw_l7.COMPILED_MODULES:
        for ext in (".py", ".pxd"):
            path = tmp_path / f"{name}{ext}"
            path.write_text("")
            os.utime(path, (100, 100))
    return tmp_path


def build(tree, when: float, skip: str | None = None) -> None:
    for name in kgw_l7.COMPILED_MODULES:
        if name != skip:
            so = tree / f"{name}{SUFFIX}"
            so.write_text("")
            os.utime(so, (when, when))


def test_fresh_build_is_used(tree):
    build(tree, 200)
    assert all(kgw_l7.extension_in_use(n) for n in kgw_l7.COMPILED_MODULES)
    assert not kgw_l7.extension_in_use("echo")  # never compiled


def test_no_build_or_partial_build_is_not_used(tree):
    assert not kgw_l7.extension_in_use("h1")
    build(tree, 200, skip="context")
    assert not kgw_l7.extension_in_use("h1")


def test_one_changed_declaration_makes_the_whole_build_stale(tree):
    build(tree, 200)
    os.utime(tree / "upstream.pxd", (300, 300))  # h1 is not affected by name, yet stale
    assert not kgw_l7.extension_in_use("h1")


def test_disabled_by_environment(tree, monkeypatch):
    build(tree, 200)
    monkeypatch.setenv("KGW_NO_EXTENSIONS", "1")
    assert not kgw_l7.extension_in_use("exchange")


def test_disabled_build_imports_the_sources():
    code = ("import kgw_l7, kgw_l7.exchange, kgw_l7.h1; "
            "print(kgw_l7.exchange.__file__, kgw_l7.h1.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, "KGW_NO_EXTENSIONS": "1"})
    assert [p.rsplit(".", 1)[-1] for p in out.stdout.split()] == ["py", "py"]
