"""bench/report.py: a bench run appends to its results file, never rewrites its history."""

from __future__ import annotations

from pathlib import Path

from bench.report import as_section, save


def test_first_run_writes_the_report_as_is(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    save(out, "# L7 benchmark\n\n## Table\n| a |\n")
    assert out.read_text() == "# L7 benchmark\n\n## Table\n| a |\n"


def test_a_later_run_is_appended_as_a_dated_section(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    out.write_text("# L7 benchmark\n\nquiet-machine run by hand, 2026-12-07\n")
    save(out, "# L7 benchmark\n\nCommand: x\n\n## Table\n| a |")
    text = out.read_text()
    assert text.startswith("# L7 benchmark\n\nquiet-machine run by hand, 2026-12-07\n\n")
    new = text.split("2026-12-07\n\n", 1)[1]
    assert new.startswith("## L7 benchmark (run of ") and " UTC)\n" in new
    assert "\n### Table\n| a |\n" in new and new.endswith("| a |\n")


def test_a_report_without_a_title_gets_one() -> None:
    assert as_section("| a |", when=0).splitlines()[0] == "## Run of 1970-01-01 00:00 UTC"
