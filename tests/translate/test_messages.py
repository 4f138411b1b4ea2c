"""Configuration messages say what is wrong and where: a parentRef to a Gateway that does
not exist is a problem (no status can show it), a route refused by a conflicted listener
names the listener and its conflict, a broken regular expression shows Python's error
and its position - and what validation accepts, the router compiles."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import yaml

from controller.cli import main
from kgw_cli.env import Environment, ExitStatus
from controller.files import FileSource
from controller.objects import ObjectKey
from controller.source import Event, EventType
from controller.supervisor import Supervisor
from controller.translate import Translator, translate
from controller.translate.httproute import regex_error
from kgw_l7 import router
from kgw_l7.regex import compile_bytes, compile_text
from tests.translate.worlds import CLASS, gateway, http_route, norm, service, store_of

P = [{"name": "gw"}]
HTTP = {"name": "http", "port": 80, "protocol": "HTTP"}
R = ObjectKey("HTTPRoute", "default", "r")


def _accepted(t, name="r"):
    parent = t.statuses[ObjectKey("HTTPRoute", "default", name)]["parents"][0]
    return next(c for c in parent["conditions"] if c["type"] == "Accepted")


def test_parent_gateway_that_does_not_exist_is_a_problem() -> None:
    objs = [CLASS, gateway("gw", [HTTP]), service("svc"),
            http_route("r", [{"name": "nope"}]),
            http_route("s", [{"name": "gw"}, {"name": "gone", "namespace": "x"}])]
    t = translate(store_of(objs))
    texts = {(p.key, p.field): p.message for p in t.problems}
    assert texts[(R, "spec.parentRefs[0]")] == ("Gateway default/nope does not exist: "
                                                "the route is not attached to it")
    assert texts[(ObjectKey("HTTPRoute", "default", "s"), "spec.parentRefs[1]")].startswith(
        "Gateway x/gone does not")
    assert R not in t.statuses  # no parent of ours: no status (the spec), the problem says it
    assert _accepted(t, "s")["status"] == "True"


def test_the_problem_goes_when_the_gateway_comes() -> None:
    store = store_of([CLASS, service("svc"), http_route("r", P)])
    tr = Translator()
    assert [p.field for p in tr.update(store, set()).problems] == ["spec.parentRefs[0]"]
    gw = norm(gateway("gw", [HTTP]), 9)
    store.apply([Event(EventType.ADDED, ObjectKey.of(gw), gw, "2", 1)])
    t = tr.update(store, {ObjectKey.of(gw)})
    assert t.problems == () and _accepted(t)["status"] == "True"


def test_gateway_of_a_class_that_does_not_exist_and_route_without_parents() -> None:
    other_class = {**CLASS, "metadata": {"name": "theirs"},
                   "spec": {"controllerName": "example.com/other"}}
    objs = [CLASS, other_class, gateway("typo", [HTTP], gatewayClassName="kwg"),
            gateway("foreign", [HTTP], gatewayClassName="theirs"), service("svc"),
            http_route("r", [])]
    t = translate(store_of(objs))
    texts = {(p.key.name, p.field): p.message for p in t.problems}
    assert texts == {
        ("typo",
         "spec.gatewayClassName"): "GatewayClass 'kwg' does not exist: nothing serves this Gateway",
        ("r", "spec.parentRefs"): "the route has no parentRefs: it is attached to no Gateway",
    }  # another implementation's Gateway is not a problem


def test_route_refused_by_a_conflicted_listener_names_it_and_the_conflict() -> None:
    listeners = [HTTP, {"name": "raw", "port": 80, "protocol": "TCP"},
                 {"name": "other", "port": 81, "protocol": "HTTP",
                  "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]}}]
    objs = [CLASS, gateway("gw", listeners), service("svc"), http_route("r", P)]
    msg = _accepted(translate(store_of(objs)))["message"]
    assert "listener http is not accepted (ProtocolConflict: port 80 is also used by " \
           "listener(s) of another protocol: raw (TCP))" in msg
    assert "listener other does not take HTTPRoute (it takes no route kind)" in msg
    assert "namespace" not in msg
    # a namespace refusal names the namespace rule
    objs = [CLASS, gateway("gw", [HTTP]), service("svc", "shop"),
            http_route("r", [{"name": "gw", "namespace": "default"}],
                         ns="shop")]
    t = translate(store_of(objs))
    parent = t.statuses[ObjectKey("HTTPRoute", "shop", "r")]["parents"][0]
    msg = next(c for c in parent["conditions"] if c["type"] == "Accepted")["message"]
    assert msg == "listener http takes routes from namespace default only, not from shop"


@pytest.mark.parametrize("match,expected", [
    ({"path": {"type": "RegularExpression", "value": "/a(b"}},
     "spec.rules[0].matches[1].path: invalid regular expression '/a(b': missing ), unterminated "
     "subpattern at position 2"),
    ({"path": {"type": "RegularExpression", "value": "/\\N{DIGIT ONE}"}},
     "spec.rules[0].matches[1].path: invalid regular expression '/\\\\N{DIGIT ONE}': bad escape "
     "\\N at position 1"),
    ({"path": {"type": "RegularExpression", "value": "/caf\u20ac"}},
     "spec.rules[0].matches[1].path: invalid regular expression '/caf\u20ac': character '\u20ac' "
     "cannot be matched: paths and headers are matched as Latin-1 bytes at position 4"),
    ({"headers": [{"name": "x", "type": "RegularExpression", "value": "a**"}]},
     "spec.rules[0].matches[1].headers[0] (x): invalid regular expression 'a**': multiple repeat "
     "at position 2"),
    ({"queryParams": [{"name": "q", "type": "RegularExpression", "value": "[a-"}]},
     "spec.rules[0].matches[1].queryParams[0] (q): invalid regular expression '[a-': unterminated "
     "character set at position 0"),
])
def test_invalid_regex_shows_the_error_and_its_position(match, expected) -> None:
    rules = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}, match],
              "backendRefs": [{"name": "svc", "port": 80}]}]
    t = translate(
        store_of([CLASS, gateway("gw", [HTTP]), service("svc"), http_route("r", P, rules)]))
    cond = _accepted(t)
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "UnsupportedValue",
                                                                 expected)


@pytest.mark.parametrize("pattern", [
    "/a(b", "/ok/[0-9]+", "/\\N{DIGIT ONE}", "/caf\u00e9", "/caf\u20ac", "(?u)x", "(?L)x", "(?a)x",
    "\\d+\\w*",
    "[[:alpha:]]", "(?P<n>a)(?P=n)", "\\p{L}", "a{2,1}", "(?<!a)b", "x" * 5000,
    "(" * 200 + ")" * 200,
])
@pytest.mark.filterwarnings("ignore::FutureWarning")  # "[[:alpha:]]": a possible nested set
def test_what_validation_accepts_the_router_compiles(pattern, caplog) -> None:
    """Paths and headers compile as bytes, queries as text, in the router and in validation."""
    for as_bytes, compile_ in ((True, compile_bytes), (False, compile_text)):
        accepted = regex_error(pattern, compile_) is None
        caplog.clear()
        compiled = router._regex(pattern, as_bytes, "rule")
        never = compiled in (router._NEVER_B, router._NEVER_S)
        assert accepted is not never, (pattern, as_bytes)
        assert never == bool(caplog.records)


def _files(tmp_path: Path) -> Path:
    route = http_route("r", [{"name": "nope"}])
    bad = http_route("bad", P,
                     [{"matches": [{"path": {"type": "RegularExpression", "value": "/a(b"}}],
                      "backendRefs": [{"name": "svc", "port": 80}]}])
    docs = [{"apiVersion": "gateway.networking.k8s.io/v1", **CLASS},
            {"apiVersion": "gateway.networking.k8s.io/v1", **gateway("gw", [HTTP])},
            {"apiVersion": "v1", **service("svc")},
            {"apiVersion": "gateway.networking.k8s.io/v1", **bad},
            {"apiVersion": "gateway.networking.k8s.io/v1", **route}]
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return tmp_path


def test_validate_lists_them_where_they_are_defined(tmp_path: Path) -> None:
    _files(tmp_path)
    out = io.StringIO()
    assert main(["validate", "-c", str(tmp_path), "-o", "table"],
                Environment(stdout=out)) == ExitStatus.INVALID
    text = out.getvalue()
    line = next(x for x in text.splitlines() if "nope" in x)
    assert line.startswith("error: ") and "/all.yaml:" in line
    assert line.endswith("HTTPRoute default/r: spec.parentRefs[0]: Gateway default/nope does not "
                         "exist: the route is not attached to it")
    assert ("HTTPRoute default/bad: parent default/gw: Accepted=False (UnsupportedValue): "
            "spec.rules[0].matches[0]"
            ".path: invalid regular expression '/a(b': missing ), unterminated subpattern at "
            "position 2") in text


def test_problems_page_lists_them(tmp_path: Path) -> None:
    _files(tmp_path)

    async def problems() -> list[dict]:
        import json

        sup = Supervisor(FileSource(tmp_path, watch=False))
        await sup.run()
        return json.loads((await sup._problems())[2])["problems"]

    (p,) = asyncio.run(problems())
    assert p["object"] == "HTTPRoute default/r" and p["field"] == "spec.parentRefs[0]"
    assert "Gateway default/nope does not exist" in p["text"]
    where, line = p["origin"].rsplit(":", 1)
    assert where.endswith("/all.yaml")
    doc = (tmp_path / "all.yaml").read_text().splitlines()[int(line) - 1:]
    assert doc[0].startswith("apiVersion:") and "  name: r" in doc[:5]
