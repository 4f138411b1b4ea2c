"""Rendering deploy/ with `kubectl kustomize`, for the deploy and RBAC tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: cannot render deploy/ with `kubectl kustomize`")
    return path


def render(directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def base_documents() -> list[dict[str, Any]]:
    """deploy/base as applied: rendered when kubectl is here, else its resource files as
    written (the base only adds a label and an image tag, which RBAC checks don't read)."""
    if shutil.which("kubectl") is not None:
        return render(DEPLOY / "base")
    kustomization = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((DEPLOY / "base" / name).read_text()) if d)
    return docs
