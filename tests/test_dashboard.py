"""The Grafana dashboard in deploy/grafana is a dashboard Grafana imports: its JSON model's
required fields, unique panel ids and query refIds, a grid without overlaps, and every
query on the data source variable it declares. (That each expression names metrics kgw
exports, and that Prometheus runs it, is tests/test_observability.py's, against a running
kgw and a real Prometheus.)"""

from __future__ import annotations

import json
import re

from tests.helpers import ROOT

DASHBOARD = ROOT / "deploy" / "grafana" / "kgw.json"


def test_dashboard_json_model() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert dash["uid"] and dash["title"] and dash["id"] is None  # importable anywhere
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"][
        "query"] == "prometheus"
    panels = dash["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("h", "w", "x", "y")), p["title"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for title, o in boxes:
            overlap = (g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"]
                       and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"])
            assert not overlap, (p["title"], title)
        boxes.append((p["title"], g))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"] == p["datasource"], p["title"]
            # only variables the dashboard declares, or Grafana's own
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var.startswith("__"), (p["title"], var)
