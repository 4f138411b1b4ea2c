"""Golden tests (kgateway style): inputs/NAME.yaml -> outputs/NAME.yaml.

The output holds the L7 and L4 configs (to_dict) and a statuses block sorted by object.
Regenerate with REFRESH_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from controller.translate import Options, translate
from tests.translate.worlds import store_of

HERE = Path(__file__).parent
INPUTS = sorted((HERE / "inputs").glob("*.yaml"))


def render(path: Path) -> str:
    objs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    t = translate(store_of(objs), Options(node_addresses=("192.0.2.1",)))
    out = {
        "l7": t.l7.to_dict(),
        "l4": t.l4.to_dict(),
        "statuses": [
            {"kind": k.kind, "namespace": k.namespace, "name": k.name, "status": t.statuses[k]}
            for k in sorted(t.statuses)
        ],
    }
    return yaml.safe_dump(out, sort_keys=False, width=120)


@pytest.mark.parametrize("path", INPUTS, ids=[p.stem for p in INPUTS])
def test_golden(path: Path) -> None:
    got = render(path)
    golden = HERE / "outputs" / path.name
    if os.environ.get("REFRESH_GOLDEN") == "1" or not golden.exists():
        golden.write_text(got)
        if os.environ.get("REFRESH_GOLDEN") != "1":
            pytest.fail(f"wrote missing golden {golden.name}; review it and re-run")
    assert got == golden.read_text(), f"{golden.name} differs; REFRESH_GOLDEN=1 to accept"


def test_render_is_deterministic() -> None:
    for path in INPUTS:
        assert render(path) == render(path)
