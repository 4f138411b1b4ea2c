"""deploy/base/kgw-crds.yaml is what the schema code generates, and it holds what kgw
validates (the structural part)."""

from __future__ import annotations

from pathlib import Path

import yaml

from controller.objects import KINDS, POLICY_KINDS
from controller.policy.crd import manifests
from controller.policy.registry import SECTIONS

FILE = Path(__file__).resolve().parents[2] / "deploy" / "base" / "kgw-crds.yaml"


def test_the_shipped_crds_are_the_generated_ones() -> None:
    assert FILE.read_text() == manifests(), \
        "regenerate: .venv/bin/python -m controller.policy.crd > deploy/base/kgw-crds.yaml"


def test_each_kind_has_its_sections_and_a_status_subresource() -> None:
    docs = {d["spec"]["names"]["kind"]: d for d in yaml.safe_load_all(FILE.read_text())}
    assert set(docs) == set(POLICY_KINDS)
    for kind, doc in docs.items():
        assert doc["metadata"]["name"] == f"{KINDS[kind].plural}.gateway.kgw.dev"
        (version,) = doc["spec"]["versions"]
        assert version["subresources"] == {"status": {}}
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert set(spec["properties"]) == {"targetRefs"} | {s.field for s in SECTIONS[kind]}
        assert spec["required"] == ["targetRefs"]


def test_section_fields_and_attributes_are_unique_across_kinds() -> None:
    sections = [s for kind in SECTIONS.values() for s in kind]
    assert len({s.field for s in sections}) == len(sections)
    assert len({s.attr for s in sections}) == len(sections)


def test_each_section_fills_a_field_of_the_plane_record() -> None:
    import dataclasses

    from kgw_l7.config import ListenerPolicy, RulePolicy
    rule_fields = {f.name for f in dataclasses.fields(RulePolicy)}
    listener_fields = {f.name for f in dataclasses.fields(ListenerPolicy)}
    for kind in SECTIONS.values():
        for s in kind:
            assert s.attr in (listener_fields if s.listener_only else rule_fields), s.field
