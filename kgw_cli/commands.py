"""A command tree declared as data (after httpie's manager CLI): each command is a
``Command`` record in a table, built into argparse here and dispatched by the caller
through the same table."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kgw_cli.env import Environment, ExitStatus
from kgw_cli.output import FORMATS

#: One argparse argument: ``add_argument(*flags, **options)``.
Arg = tuple[tuple[str, ...], dict[str, Any]]
#: A command's arguments, or a function that gives them only when that command is parsed:
#: defaults read from modules that are slow to import cost only the commands using them.
Arguments = tuple[Arg, ...] | Callable[[], tuple[Arg, ...]]

H = TypeVar("H")


@dataclass(frozen=True)
class Command(Generic[H]):
    """One subcommand: its one-line help, what runs it, and its arguments."""

    help: str
    #: What the caller dispatches to: a handler, or the module holding one.
    handler: H
    arguments: Arguments = ()


def output_arg(formats: Sequence[str] = FORMATS, default: str | None = None) -> Arg:
    """``-o/--output``; with no default, a table on a terminal and JSON otherwise
    (``Environment.default_format``)."""
    return (("-o", "--output"), {
        "choices": tuple(formats), "default": default,
        "help": f"output format (default {default})" if default else
                "output format (default: table on a terminal, json otherwise)"})


def add_commands(sub: Any, commands: Mapping[str, Command[Any]], only: str | None = None) -> None:
    """A parser per command under ``sub`` (from ``add_subparsers``); with ``only``, the
    arguments of that command alone (the command line names it: no other is parsed)."""
    for name, command in commands.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        if only is not None and name != only:
            continue
        arguments = command.arguments() if callable(command.arguments) else command.arguments
        for flags, options in arguments:
            p.add_argument(*flags, **options)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
          env: Environment) -> argparse.Namespace | ExitStatus:
    """``argv`` parsed; ``--help`` and usage errors are written to ``env``'s streams and
    come back as the exit status instead of leaving the process (argparse would exit)."""
    with contextlib.redirect_stdout(env.stdout), contextlib.redirect_stderr(env.stderr):
        try:
            return parser.parse_args(argv)
        except SystemExit as exc:
            return ExitStatus.SUCCESS if exc.code in (0, None) else ExitStatus.INVALID
