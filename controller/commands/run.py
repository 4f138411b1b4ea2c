"""``kgw run -c DIR``: serve a directory of Gateway API objects (standalone mode)."""

from __future__ import annotations

import argparse

from controller.files import FileSource
from controller.serve import PlaneOptions, run_serving, serve_planes, start_logging
from kgw_cli.env import Environment, ExitStatus


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    start_logging(args, env)
    return run_serving(env, serve_planes(PlaneOptions.from_args(args), FileSource(args.config),
                                         node_view=True))
