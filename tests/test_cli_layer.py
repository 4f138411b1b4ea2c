"""kgw_cli, the CLI layer kgw and kgw-inspect share: exit codes, the environment, rendering,
the command table; and both CLIs going through it."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import yaml

from controller.cli import main as kgw_main
from kgw_cli.commands import Command, add_commands, output_arg, parse
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.output import FORMATS, dump, table
from kgw_l4.inspect import Env as InspectEnv, main as inspect_main


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_exit_codes_mean_the_same_in_both_clis() -> None:
    assert {s.name: int(s) for s in ExitStatus} == {
        "SUCCESS": 0, "ERROR": 1, "INVALID": 2, "UNAVAILABLE": 3, "NOT_FOUND": 4,
        "INTERRUPTED": 130}
    # kgw-inspect's names are the same codes, not others
    assert (ExitStatus.OK, ExitStatus.USAGE, ExitStatus.NO_STATE) == (
        ExitStatus.SUCCESS, ExitStatus.INVALID, ExitStatus.UNAVAILABLE)


@pytest.mark.parametrize(("stdout", "requested", "expected"), [
    (Terminal(), None, "table"), (io.StringIO(), None, "json"),
    (Terminal(), "yaml", "yaml"), (io.StringIO(), "table", "table")])
def test_table_only_for_a_terminal_unless_asked(stdout: io.StringIO, requested: str | None,
                                                expected: str) -> None:
    assert Environment(stdout=stdout).default_format(requested) == expected


def test_environment_writes_lines_to_its_own_streams(capsys: pytest.CaptureFixture[str]) -> None:
    class Flushes(io.StringIO):
        flushed = 0

        def flush(self) -> None:
            self.flushed += 1

    out, err = Flushes(), io.StringIO()
    env = Environment(stdout=out, stderr=err)
    env.out("a")
    env.out()
    env.out("b", flush=True)
    env.err("oops")
    assert (out.getvalue(), err.getvalue(), out.flushed) == ("a\n\nb\n", "oops\n", 1)
    assert capsys.readouterr() == ("", "")


def test_table_pads_columns_and_strips_line_ends() -> None:
    text = table(("NAME", "N", "NOTE"), [("a", 1, ""), ("long-name", 22, "x")])
    assert text == ("NAME        N    NOTE\n"
                    "a           1\n"
                    "long-name   22   x")
    assert table(("A", "B"), [("x", "y")], gap=2) == "A  B\nx  y"
    assert table(("ONLY",), []) == "ONLY"


def test_json_and_yaml_are_stable_and_plain() -> None:
    value = {"b": [1, {"z": None, "a": "é"}], "a": True}
    assert dump(value, "json") == json.dumps(value, indent=2)
    assert list(json.loads(dump(value, "json"))) == ["b", "a"]  # the order given
    assert list(json.loads(dump(value, "json", sort_keys=True))) == ["a", "b"]
    assert yaml.safe_load(dump(value, "yaml")) == value
    assert dump(value, "yaml").startswith("b:\n") and not dump(value, "yaml").endswith("\n")
    for fmt in ("json", "yaml"):
        assert "\x1b" not in dump(value, fmt) and dump(value, fmt) == dump(value, fmt)
    with pytest.raises(ValueError, match="table"):
        dump(value, "table")


def test_command_table_builds_argparse_and_parsing_never_exits(
    capsys: pytest.CaptureFixture[str]) -> None:
    commands = {
        "greet": Command("say hello", "greeter", ((("--name",), {"default": "you"}), output_arg()))}
    parser = argparse.ArgumentParser(prog="t")
    add_commands(parser.add_subparsers(dest="command", required=True), commands)
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err)
    ns = parse(parser, ["greet", "-o", "yaml"], env)
    assert isinstance(ns, argparse.Namespace) and (ns.command, ns.name,
                                                   ns.output) == ("greet", "you", "yaml")
    assert parse(parser, ["greet", "-o", "xml"], env) == ExitStatus.INVALID
    assert "invalid choice: 'xml'" in err.getvalue() and out.getvalue() == ""
    assert parse(parser, ["greet", "--help"], env) == ExitStatus.SUCCESS
    assert "say hello" in out.getvalue() and "{" + ",".join(FORMATS) + "}" in out.getvalue()
    assert capsys.readouterr() == ("", "")  # everything went to the environment's streams


def test_kgw_usage_error_is_an_exit_status_on_its_streams(
    capsys: pytest.CaptureFixture[str]) -> None:
    """kgw parses through the layer: a bad command line is INVALID, said on env.stderr,
    instead of SystemExit with the message on the process's stderr."""
    err = io.StringIO()
    assert kgw_main(["status", "--output", "xml"],
                    Environment(stdout=io.StringIO(), stderr=err)) == ExitStatus.INVALID
    assert "invalid choice: 'xml'" in err.getvalue()
    out = io.StringIO()
    assert kgw_main(["--help"], Environment(stdout=out)) == ExitStatus.SUCCESS
    assert "agent" in out.getvalue() and "validate" in out.getvalue()
    assert capsys.readouterr() == ("", "")


def test_inspect_environment_is_the_shared_one_and_speaks_yaml() -> None:
    """kgw-inspect's Env adds how to reach the kernel state to the shared Environment;
    its output goes through the same renderers (yaml too)."""
    out = io.StringIO()
    env = InspectEnv(stdout=out, stderr=io.StringIO(), admin_get=lambda _url: {"l4": {"spliced": [
        {"client": "10.0.0.5:1", "backend": "10.1.0.1:80"}]}})
    assert isinstance(env, Environment)
    assert inspect_main(["-o", "yaml", "spliced"], env) == ExitStatus.SUCCESS
    assert out.getvalue() == "- backend: 10.1.0.1:80\n  client: 10.0.0.5:1\n"


def test_arguments_given_by_a_function_are_built_only_for_their_command() -> None:
    built: list[str] = []

    def slow() -> tuple:
        built.append("serve")
        return ((("--port",), {"type": int, "default": 1}),)

    commands = {"serve": Command("serve", "s", slow), "show": Command("show", "t", (output_arg(),))}
    for only, argv, expected in ((None, ["serve", "--port", "2"], ["serve"]),
                                 ("show", ["show"], []), ("serve", ["serve"], ["serve"])):
        built.clear()
        parser = argparse.ArgumentParser(prog="t")
        add_commands(parser.add_subparsers(dest="command", required=True), commands, only)
        assert built == expected
        assert isinstance(parse(parser, argv,
                                Environment(stdout=io.StringIO(), stderr=io.StringIO())),
                          argparse.Namespace)
