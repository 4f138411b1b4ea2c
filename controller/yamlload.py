"""Reading YAML documents safely, with the line each one starts on.

Users' files are untrusted input. PyYAML's safe loader already refuses arbitrary tags;
on top of that we bound what a document may cost: anchors and aliases are legal YAML,
but a "billion laughs" document expands exponentially once walked (by defaulting,
validation, JSON output), and a recursive alias never ends. Both are refused here,
before anything walks the data, as are files over ``MAX_FILE_BYTES``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

try:  # the C loader is ~10x faster; fall back where libyaml is missing
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the build
    _Loader = yaml.SafeLoader  # type: ignore[assignment, misc]

#: Larger files are refused whole. Kubernetes caps an object at ~1.5 MiB (etcd's request
#: limit); 8 MiB holds about 25,000 HTTPRoutes (reading them takes ~5 s): a configuration
#: larger than that is split into several files, each read on its own.
MAX_FILE_BYTES = 8 * 1024 * 1024
#: Nodes one document may expand to (aliases counted every time they are used).
MAX_NODES = 2_000_000
#: Nesting depth; real Gateway API objects are under 20 levels deep.
MAX_DEPTH = 64


class DocumentError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Document:
    line: int  # 1-based line of the document's first node
    #: The document's own text (from its first node to its last), a cache key.
    source: str
    #: The parsed data; None when the caller asked to skip constructing it.
    data: Any


def _check_size(root: yaml.Node) -> None:
    """Walk the node graph as the data would be walked after alias expansion."""
    count = 0
    stack: list[tuple[yaml.Node, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise DocumentError(root.start_mark.line + 1,
                                f"document expands to more than {MAX_NODES} nodes (alias bomb?)")
        if depth > MAX_DEPTH:  # also ends a recursive alias, which nests forever
            raise DocumentError(node.start_mark.line + 1,
                                f"document nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            continue
        stack.extend((c, depth + 1) for c in children)


#: Quoted text in a YAML error message.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def _unquote(m: re.Match[str]) -> str:
    """Quoted text with a letter or digit in it is a piece of the file (a character, a tag,
    an escape): elided. Quoted punctuation is YAML's own syntax (',' or ']'): kept."""
    return "(…)" if re.search(r"\w", m.group()) else m.group()


def _yaml_error(exc: yaml.YAMLError, line: int) -> DocumentError:
    """A DocumentError for a YAML error: its line and column, and what is wrong, without
    quoting the file. Files hold Secrets: a message that goes to logs and ``/problems``
    must not carry a piece of one (PyYAML quotes the offending character, tag or escape,
    and the pure-Python loader adds the whole line)."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        return DocumentError(line, "invalid YAML")
    mark = exc.problem_mark or exc.context_mark
    what = _QUOTED.sub(_unquote, exc.problem or exc.context or "syntax error")
    if mark is None:
        return DocumentError(line, f"invalid YAML: {what}")
    return DocumentError(mark.line + 1, f"invalid YAML at column {mark.column + 1}: {what}")


def load_documents(text: str | bytes,
                   skip: Callable[[str], bool] | None = None) -> Iterator[Document]:
    """Yield each non-empty document. Raises DocumentError (with a line) on bad YAML.

    ``skip(source)`` may say that a document's data is not needed (the caller has the
    result for that exact text already): its data is then not constructed, which is
    most of the cost of re-reading a large file in which one document changed.
    Documents before the first error are yielded; the caller decides what a partial
    file means (kgw keeps the file's previous objects, see ``controller.files``).
    """
    if len(text) > MAX_FILE_BYTES:
        raise DocumentError(1, f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = exc.object[:exc.start].count(b"\n") + 1
            raise DocumentError(line, f"not UTF-8 text: {exc.reason}") from None
    # Aliases need an anchor ("&"); without one no document can expand, so the walk
    # (pure Python, slow on big files) is only needed when the text has one.
    may_alias = "&" in text
    loader = _Loader(text)
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
            except yaml.YAMLError as exc:
                raise _yaml_error(exc, 1) from None
            if node is None:
                continue
            if may_alias:
                _check_size(node)
            line = node.start_mark.line + 1
            source = text[node.start_mark.index:node.end_mark.index]
            if skip is not None and skip(source):
                yield Document(line, source, None)
                continue
            try:
                data = loader.construct_document(node)
            except yaml.YAMLError as exc:
                raise _yaml_error(exc, line) from None
            except RecursionError:
                raise DocumentError(line, "document nests too deeply") from None
            if data is not None:
                yield Document(line, source, data)
    finally:
        loader.dispose()
