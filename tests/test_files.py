"""The file source: defaults, validation, bad input, and what keeps serving."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from controller.files import FileSource
from controller.objects import ObjectKey
from controller.source import EventType
from controller.yamlload import MAX_FILE_BYTES

ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: svc, port: {port}}}]
"""


def route(name: str = "r1", ns: str = "default", port: int = 80) -> str:
    return ROUTE.format(name=name, ns=ns, port=port)


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(textwrap.dedent(text))
    return p


def keys(batch, type_=None):
    return {e.key for e in batch.events if type_ is None or e.type is type_}


R1 = ObjectKey("HTTPRoute", "default", "r1")


def test_loads_multi_document_files_with_defaults(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", route("r1") + "---\n" + route("r2", "other"))
    batch = FileSource(tmp_path, watch=False).load()
    assert not batch.problems
    assert {R1, ObjectKey("HTTPRoute", "other", "r2")} <= keys(batch, EventType.ADDED)
    r1 = next(e for e in batch.events if e.key == R1)
    assert r1.generation == 1 and r1.resource_version
    rule = r1.obj["spec"]["rules"][0]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"][0]["weight"] == 1
    assert r1.obj["spec"]["parentRefs"][0]["group"] == "gateway.networking.k8s.io"
    assert r1.obj["spec"]["parentRefs"][0]["kind"] == "Gateway"
    # every namespace in use exists, labelled as the API server labels namespaces
    ns = {e.key.name: e.obj for e in batch.events if e.key.kind == "Namespace"}
    assert set(ns) == {"default", "other"}
    assert ns["other"]["metadata"]["labels"]["kubernetes.io/metadata.name"] == "other"


def test_namespace_defaults_to_default(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", route("r1").replace(", namespace: default", ""))
    batch = FileSource(tmp_path, watch=False).load()
    assert R1 in keys(batch)


@pytest.mark.parametrize("text, expected", [
    ("kind: [\n", "a.yaml:2: invalid YAML"),
    ("- just\n- a list\n", "a.yaml:1: a document must be a mapping"),
    ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "a.yaml:1: kind: unknown kind 'Pod'"),
    ("apiVersion: gateway.networking.k8s.io/v9\nkind: HTTPRoute\nmetadata: {name: x}\n",
     "a.yaml:1: HTTPRoute: apiVersion: 'gateway.networking.k8s.io/v9' is not served (served: "),
    ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {}\n",
     "a.yaml:1: HTTPRoute: metadata.name: required"),
    ("kind: HTTPRoute\nmetadata: {name: x}\n", "a.yaml:1: HTTPRoute: apiVersion: required"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "a.yaml:1: kind: required"),
])
def test_bad_documents_are_reported_with_file_and_line(tmp_path: Path, text: str,
                                                       expected: str) -> None:
    write(tmp_path, "a.yaml", text)
    write(tmp_path, "good.yaml", route("r1"))
    batch = FileSource(tmp_path, watch=False).load()
    assert R1 in keys(batch), "the rest of the configuration keeps being served"
    lines = [str(p) for p in batch.problems]
    assert any(line.startswith(f"{tmp_path.name}/{expected}") for line in lines), lines


def test_schema_error_names_file_object_and_field(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", route("r1") + "---\n" + route("bad").replace(
        "  - backendRefs: [{name: svc, port: 80}]",
        "  - matches: [{path: {type: Exact, value: nope}}]"))
    batch = FileSource(tmp_path, watch=False).load()
    assert R1 in keys(batch)
    assert ObjectKey("HTTPRoute", "default", "bad") not in keys(batch)
    (problem,) = batch.problems
    text = str(problem)
    assert text.startswith(
        f"{tmp_path.name}/a.yaml:9: HTTPRoute default/bad: spec.rules[0].matches[0].path")
    assert problem.key == ObjectKey("HTTPRoute", "default", "bad")


def test_wrong_types_never_crash(tmp_path: Path) -> None:
    junk = [
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: a}\nspec: 7\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: b}\nspec: "
        "{rules: yes}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: c}\nspec: "
        "{listeners: [1, null]}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: [x]}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: d, namespace: "
        "5}\n",
        "apiVersion: v1\nkind: Service\nmetadata: {name: e}\nspec: {ports: [{port: banana}]}\n",
        "apiVersion: 3\nkind: 4\n",
    ]
    write(tmp_path, "junk.yaml", "---\n".join(junk))
    batch = FileSource(tmp_path, watch=False).load()
    assert len(batch.problems) >= len(junk)
    assert not [e for e in batch.events if e.key.kind != "Namespace"]


def test_duplicates_keep_the_first_and_the_second_takes_over(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", route("r1", port=80))
    write(tmp_path, "b.yaml", route("r1", port=81))
    src = FileSource(tmp_path, watch=False)
    batch = src.load()
    r1 = next(e for e in batch.events if e.key == R1)
    assert r1.obj["spec"]["rules"][0]["backendRefs"][0]["port"] == 80
    assert any("duplicate: already defined in" in str(p) and "b.yaml" in p.origin
               for p in batch.problems)
    (tmp_path / "a.yaml").unlink()
    batch = src.load()
    (ev,) = [e for e in batch.events if e.key == R1]
    assert ev.type is EventType.MODIFIED
    assert ev.obj["spec"]["rules"][0]["backendRefs"][0]["port"] == 81
    assert not batch.problems


def test_duplicate_within_a_file(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", route("r1") + "---\n" + route("r1", port=99))
    batch = FileSource(tmp_path, watch=False).load()
    (p,) = batch.problems
    assert "duplicate: already defined at" in str(p) and p.origin.endswith("a.yaml:9")


def test_invalid_change_keeps_previous_version_until_fixed(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", route("r1", port=80))
    src = FileSource(tmp_path, watch=False)
    src.load()
    path.write_text(route("r1", port=70000))  # port out of range
    batch = src.load()
    assert not batch.events, "the previous good version keeps serving"
    assert len(batch.problems) == 1 and "previous version kept" in str(batch.problems[0])
    path.write_text(route("r1", port=81))
    batch = src.load()
    (ev,) = batch.events
    assert ev.type is EventType.MODIFIED and ev.generation == 2
    assert not batch.problems


def test_syntax_error_keeps_every_object_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", route("r1") + "---\n" + route("r2"))
    src = FileSource(tmp_path, watch=False)
    src.load()
    path.write_text(route("r1") + "---\n  bad: [indent\n")
    batch = src.load()
    assert not batch.events
    assert "keeping this file's previous objects" in str(batch.problems[0])


def test_generation_bumps_on_spec_change_only(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", route("r1"))
    src = FileSource(tmp_path, watch=False)
    first = next(e for e in src.load().events if e.key == R1)
    path.write_text(
        route("r1").replace("namespace: default}", "namespace: default, labels: {a: b}}"))
    (ev,) = src.load().events
    assert ev.type is EventType.MODIFIED and ev.generation == 1
    assert int(ev.resource_version) > int(first.resource_version)
    assert ev.obj["metadata"]["creationTimestamp"] == first.obj["metadata"]["creationTimestamp"]
    path.write_text(route("r1", port=90))
    (ev,) = src.load().events
    assert ev.generation == 2
    assert not src.load().events, "an unchanged directory yields nothing"


def test_deleting_a_file_deletes_its_objects(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", route("r1", ns="gone"))
    src = FileSource(tmp_path, watch=False)
    src.load()
    path.unlink()
    batch = src.load()
    assert keys(batch, EventType.DELETED) == {ObjectKey("HTTPRoute", "gone", "r1"),
                                              ObjectKey("Namespace", "", "gone")}


def test_status_in_files_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", route("r1") + "status: {parents: [{controllerName: x}]}\n")
    (ev,) = [e for e in FileSource(tmp_path, watch=False).load().events if e.key == R1]
    assert "status" not in ev.obj


def test_huge_file_and_alias_bomb_are_refused(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        bomb += f"{'abcdefghij'[i]}: &{'abcdefghij'[i]} [" + ", ".join(
            [f"*{'abcdefghij'[i - 1]}"] * 10) + "]\n"
    write(tmp_path, "bomb.yaml", bomb)
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    write(tmp_path, "recursive.yaml", "a: &a [*a]\n")
    write(tmp_path, "good.yaml", route("r1"))
    batch = FileSource(tmp_path, watch=False).load()
    text = "\n".join(map(str, batch.problems))
    assert "bomb.yaml:1: document expands to more than" in text
    assert "big.yaml:1: file is larger than" in text
    assert "recursive.yaml" in text
    assert R1 in keys(batch)


def test_hidden_and_editor_files_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, ".a.yaml.swp.yaml", "junk: [")
    write(tmp_path, "a.yaml~", "junk: [")
    write(tmp_path, "notes.txt", "junk")
    sub = tmp_path / "nested"
    sub.mkdir()
    write(sub, "r.yml", route("r1"))
    batch = FileSource(tmp_path, watch=False).load()
    assert not batch.problems and R1 in keys(batch)


def test_missing_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    batch = FileSource(tmp_path / "nope", watch=False).load()
    assert not batch.events and "not a directory" in str(batch.problems[0])


async def test_watch_picks_up_changes(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", route("r1"))
    src = FileSource(tmp_path)
    it = src.batches().__aiter__()
    first = await asyncio.wait_for(it.__anext__(), 5)
    assert R1 in keys(first)
    await asyncio.sleep(0.05)  # let the watcher start
    write(tmp_path, "b.yaml", route("r2"))
    batch = await asyncio.wait_for(it.__anext__(), 5)
    assert ObjectKey("HTTPRoute", "default", "r2") in keys(batch, EventType.ADDED)
    write(tmp_path, "b.yaml", "kind: [")
    batch = await asyncio.wait_for(it.__anext__(), 5)
    assert not batch.events and batch.problems
    (tmp_path / "b.yaml").unlink()
    batch = await asyncio.wait_for(it.__anext__(), 5)
    assert ObjectKey("HTTPRoute", "default", "r2") in keys(batch, EventType.DELETED)
    await src.close()


class Pump:
    """A watching source's batches, collected by a task of their own: waiting for one with
    a timeout must not cancel the source's generator."""

    def __init__(self, src: FileSource) -> None:
        self.src = src
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.src.batches():
            self.queue.put_nowait(batch)

    async def next(self, timeout: float = 5.0):
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, pred, timeout: float = 5.0):
        """The first batch within ``timeout`` for which ``pred`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            batch = await self.next(max(0.01, deadline - loop.time()))
            if pred(batch):
                return batch

    async def close(self) -> None:
        await self.src.close()
        await asyncio.wait_for(self.task, 5)

async def test_relative_directory_edits_go_live_without_duplicates(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """README's `kgw run -c examples/`: the watcher reports absolute paths, the scan took
    the relative ones; both must name the same file."""
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf, "a.yaml", route("r1", port=80))
    monkeypatch.chdir(tmp_path)
    src = FileSource("conf/")
    it = Pump(src)
    try:
        assert R1 in keys(await it.next())
        await asyncio.sleep(0.05)
        for port in range(81, 86):
            write(conf, "a.yaml", route("r1", port=port))
            batch = await it.until(lambda b: b.events or b.problems, timeout=3)
            assert not batch.problems, batch.problems
            (ev,) = [e for e in batch.events if e.key == R1]
            assert ev.obj["spec"]["rules"][0]["backendRefs"][0]["port"] == port
    finally:
        await it.close()


async def test_moved_directory_keeps_everything_and_comes_back(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf, "a.yaml", route("r1"))
    src = FileSource(conf)
    it = Pump(src)
    try:
        assert R1 in keys(await it.next())
        await asyncio.sleep(0.05)
        conf.rename(tmp_path / "moved")
        batch = await it.until(lambda b: b.problems)
        assert not batch.events  # nothing withdrawn
        assert "configuration directory is missing" in str(batch.problems[0])
        assert "serving the last good configuration" in src.health()
        # an edit in the moved directory is not ours
        write(tmp_path / "moved", "a.yaml", route("r1", port=81))
        (tmp_path / "moved").rename(conf)
        batch = await it.until(lambda b: not b.problems)
        assert src.health() == ""
        # the watcher is armed on the directory again: an edit is live at once
        write(conf, "a.yaml", route("r1", port=82))
        batch = await it.until(lambda b: b.events, timeout=3)
        (ev,) = [e for e in batch.events if e.key == R1]
        assert ev.obj["spec"]["rules"][0]["backendRefs"][0]["port"] == 82
    finally:
        await it.close()


async def test_deleted_and_recreated_directory_is_watched_again(tmp_path: Path) -> None:
    import shutil

    conf = tmp_path / "conf"
    conf.mkdir()
    write(conf, "a.yaml", route("r1"))
    write(conf, "b.yaml", route("r2"))
    src = FileSource(conf)
    it = Pump(src)
    try:
        assert R1 in keys(await it.next())
        await asyncio.sleep(0.05)
        shutil.rmtree(conf)
        batch = await it.until(lambda b: b.problems)
        assert not batch.events
        conf.mkdir()
        write(conf, "a.yaml", route("r1", port=81))  # b.yaml is not part of the new directory
        batch = await it.until(lambda b: b.events)
        assert {e.key: e.type for e in batch.events if e.key.kind == "HTTPRoute"} == {
            R1: EventType.MODIFIED, ObjectKey("HTTPRoute", "default", "r2"): EventType.DELETED}
        write(conf, "a.yaml", route("r1", port=82))
        batch = await it.until(lambda b: b.events, timeout=3)
        assert [e.obj["spec"]["rules"][0]["backendRefs"][0]["port"] for e in batch.events
                if e.key == R1] == [82]
    finally:
        await it.close()


async def test_rescan_rereads_files_the_fingerprint_says_are_unchanged(tmp_path: Path) -> None:
    """SIGHUP: an edit that kept the size, the inode and the mtime is still read."""
    import os

    p = write(tmp_path, "a.yaml", route("r1", port=81))
    st = p.stat()
    src = FileSource(tmp_path)
    it = Pump(src)
    try:
        assert R1 in keys(await it.next())
        with p.open("r+") as f:
            f.write(route("r1", port=82))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        with pytest.raises(asyncio.TimeoutError):
            await it.until(lambda b: b.events, timeout=1.0)
        assert src.rescan()
        batch = await it.until(lambda b: b.events)
        assert [e.obj["spec"]["rules"][0]["backendRefs"][0]["port"] for e in batch.events
                if e.key == R1] == [82]
    finally:
        await it.close()
