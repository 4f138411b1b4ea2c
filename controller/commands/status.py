"""``kgw status``: the running gateway's objects, conditions and reasons."""

from __future__ import annotations

import argparse
import urllib.error

from controller.statusview import (
    endpoint_health_text, l4_health_rows, l4_health_text, status_text,
)
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
    try:
        health = get_json(f"http://{args.admin_address}/endpoint_health", TIMEOUT)
    except (urllib.error.URLError, OSError, ValueError):
        health = None  # (no L7 plane, or a kgw without the page)
    try:
        l4 = l4_health_rows(get_json(f"http://{args.admin_address}/l4", TIMEOUT))
    except (urllib.error.URLError, OSError, ValueError):
        l4 = []  # (no L4 plane: the page answers 404)
    fmt = env.default_format(args.output)
    if fmt == "table":
        text = status_text([p["text"] for p in problems], statuses)
        if health:
            text += endpoint_health_text(health)
        env.out(text + l4_health_text(l4))
    else:
        env.out(dump({"problems": problems, "status": statuses,
                      "endpoint_health": health, "l4_health": l4}, fmt))
    return ExitStatus.SUCCESS
