from __future__ import annotations

import pytest

from controller.yamlload import DocumentError, load_documents


def test_documents_carry_their_line() -> None:
    docs = list(load_documents("a: 1\n---\n# comment\n\nb: 2\n---\n---\nc: [1,\n  2]\n"))
    assert [(d.line, d.data) for d in docs] == [(1, {"a": 1}), (5, {"b": 2}), (8, {"c": [1, 2]})]


@pytest.mark.parametrize("text, line", [
    ("a: 1\n---\nb: [\n", 4),
    ("a: 1\nb: {x: 1\nc: 2\n", 3),
    ("a: !!python/object:os.system ls\n", 1),
])
def test_errors_name_a_line(text: str, line: int) -> None:
    with pytest.raises(DocumentError) as info:
        list(load_documents(text))
    assert info.value.line == line


def test_shared_anchors_are_fine_below_the_limit() -> None:
    (doc,) = load_documents("a: &x {k: v}\nb: *x\n")
    assert doc.data == {"a": {"k": "v"}, "b": {"k": "v"}}


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(DocumentError):
        list(load_documents("[" * 5000 + "]" * 5000))
