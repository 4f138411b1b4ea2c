"""``kgw translate --to-gateway-api``: golden files (REFRESH_GOLDEN=1 rewrites them), one
directory per scenario under golden/, and the annotation mapping they show."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import yaml

from controller.cli import main
from kgw_cli.env import Environment

GOLDEN = Path(__file__).parent / "golden"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), Environment(stdout=out, stderr=err))
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_to_gateway_api_golden(case: str, tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text((GOLDEN / case / "input.yaml").read_text())
    rc, out, err = run("translate", "--to-gateway-api", "-c", str(tmp_path), "-o", "yaml")
    assert rc == 0, err
    got = out + "\n---\n# stderr\n" + err.replace(str(tmp_path), "DIR")
    want_path = GOLDEN / case / "output.yaml"
    if os.environ.get("REFRESH_GOLDEN") or not want_path.exists():
        want_path.write_text(got)
    assert got == want_path.read_text()


def test_annotations_mapped_and_ignored(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text((GOLDEN / "annotations" / "input.yaml").read_text())
    _rc, out, _err = run("translate", "--to-gateway-api", "-c", str(tmp_path), "-o", "yaml")
    routes = {o["metadata"]["name"]: o for o in yaml.safe_load(out)["items"]
              if o["kind"] == "HTTPRoute"}
    shop = routes["shop-0"]["spec"]
    # ssl-redirect: the Ingress's route on HTTPS only, a 308 on HTTP
    assert [p.get("sectionName") for p in shop["parentRefs"]] == ["https-0"]
    redirect = routes["shop-0-redirect"]["spec"]["rules"][0]["filters"][0]
    assert redirect == {"type": "RequestRedirect",
                        "requestRedirect": {"scheme": "https", "statusCode": 308}}
    # canary: by header first ("always" to the canary, "never" off it), then by weight
    canary, never, main_rule, exact = shop["rules"][:4]
    assert canary["matches"][0]["headers"][-1] == {"type": "Exact", "name": "X-Canary",
                                                   "value": "always"}
    assert [b["name"] for b in canary["backendRefs"]] == ["app-next"]
    assert never["matches"][0]["headers"][-1] == {"type": "Exact", "name": "X-Canary",
                                                  "value": "never"}
    assert [(b["name"], b.get("weight")) for b in never["backendRefs"]] == [("app", None)]
    assert [(b["name"], b.get("weight")) for b in main_rule["backendRefs"]] == [
        ("app", 90), ("app-next", 10)]
    assert exact["matches"][0]["path"] == {"type": "Exact", "value": "/cart"}
    # enable-cors with its origin
    cors = next(f for f in main_rule["filters"] if f["type"] == "CORS")["cors"]
    assert cors["allowOrigins"] == ["https://shop.example.com"]
    # rewrite-target with capture groups: nginx's prefix-strip idiom
    api = routes["api-0"]["spec"]["rules"][0]
    assert api["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v1"}
    assert api["filters"][0] == {"type": "URLRewrite", "urlRewrite": {"path": {
        "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}


def test_validate_lists_ignored_annotations(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text((GOLDEN / "annotations" / "input.yaml").read_text())
    _rc, out, _err = run("validate", "-c", str(tmp_path), "-o", "yaml")
    ignored = yaml.safe_load(out)["ignoredAnnotations"]
    assert any("proxy-read-timeout is not carried" in line for line in ignored), ignored
    assert not any("ssl-redirect" in line or "canary" in line or "proxy-body-size" in line
                   for line in ignored), ignored


def test_validate_table_shows_each_ingress_and_where_it_is_served(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text((GOLDEN / "annotations" / "input.yaml").read_text())
    _rc, out, _err = run("validate", "-c", str(tmp_path), "-o", "table")
    rows = [line.split() for line in out.splitlines() if line.startswith("Ingress ")]
    assert ["Ingress", "shop", "shop", "1", "127.0.0.1", "served"] in rows, out
    assert "ignored Ingress annotations:" in out
