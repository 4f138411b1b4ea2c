"""`kgw translate` shows the sections in effect on each compiled rule and listener;
`kgw validate` names a broken policy's field and shows the others' status."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from controller.cli import main
from kgw_cli.env import Environment, ExitStatus

ROOT = Path(__file__).resolve().parents[2]
POLICY = """\
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: search-rate, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: search}]
  rateLimit:
    local:
      tokenBucket: {maxTokens: 5, tokensPerFill: 5, fillInterval: 1s}
      key: {type: ClientIP}
---
apiVersion: gateway.kgw.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: gateway-wide, namespace: demo}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: demo}]
  requestHeaderTimeout: 5s
"""


def test_translate_shows_effective_sections(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    (conf / "policies.yaml").write_text(POLICY)
    out = io.StringIO()
    assert main(["translate", "-c", str(conf), "-o", "json"],
                Environment(stdout=out)) == ExitStatus.SUCCESS
    l7 = json.loads(out.getvalue())["l7"]
    (lis,) = l7["listeners"]
    assert lis["policy"] == {"request_header_timeout": 5.0}
    rules = {r["rule"]["route"]: r["rule"].get("policy") for vh in lis["virtual_hosts"]
             for r in vh["routes"]}
    assert rules["demo/store"] is None
    assert rules["demo/search"] == {"rate_limit": {"local": {
        "max_tokens": 5, "tokens_per_fill": 5, "fill_interval": 1.0, "key": "client_ip",
        "header": "", "trusted_hops": 0,
        "scope": "TrafficPolicy demo/search-rate on HTTPRoute demo/search", "claim": ""}}}


def test_validate_names_the_field_of_a_bad_policy(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples", conf)
    (conf / "policies.yaml").write_text(POLICY)
    (conf / "bad.yaml").write_text(POLICY.split("---")[0].replace("search-rate", "bad")
                                   .replace("maxTokens: 5", "maxTokens: 0"))
    out = io.StringIO()
    assert main(["validate", "-c", str(conf), "-o", "table"],
                Environment(stdout=out)) == ExitStatus.INVALID
    text = out.getvalue()
    assert "spec.rateLimit.local.tokenBucket.maxTokens" in text, text
    assert "gateway-wide" in text and "Accepted=True" in text, text
