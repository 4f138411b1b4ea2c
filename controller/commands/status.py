"""``kgw status``: the running gateway's objects, conditions and reasons."""

from __future__ import annotations

import argparse
import urllib.error

from controller.statusview import status_text
from kgw_cli.admin import get_json
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.output import dump

TIMEOUT = 5.0


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    try:
        statuses = get_json(f"http://{args.admin_address}/status", TIMEOUT)
        problems = get_json(f"http://{args.admin_address}/problems", TIMEOUT).get("problems", [])
    except (urllib.error.URLError, OSError, ValueError) as exc:
        env.err(f"error: cannot read the admin API at http://{args.admin_address}: {exc}")
        return ExitStatus.UNAVAILABLE
    fmt = env.default_format(args.output)
    if fmt == "table":
        env.out(status_text([p["text"] for p in problems], statuses))
    else:
        env.out(dump({"problems": problems, "status": statuses}, fmt))
    return ExitStatus.SUCCESS
