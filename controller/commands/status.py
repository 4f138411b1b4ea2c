"""``kgw status``: the running gateway's objects, conditions and reasons."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from controller.env import Environment, ExitStatus
from controller.output import STATUS_HEADERS, dump, failing_conditions, status_rows, table


def fetch(admin_address: str, path: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(f"http://{admin_address}{path}", timeout=timeout) as resp:
        return json.load(resp)


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    try:
        statuses = fetch(args.admin_address, "/status")
        problems = fetch(args.admin_address, "/problems").get("problems", [])
    except (urllib.error.URLError, OSError, ValueError) as exc:
        env.err(f"error: cannot read the admin API at http://{args.admin_address}: {exc}")
        return ExitStatus.UNAVAILABLE
    fmt = env.default_format(args.output)
    if fmt == "table":
        for p in problems:
            env.out(f"error: {p['text']}")
        if problems:
            env.out()
        env.out(table(STATUS_HEADERS, status_rows(statuses)))
        failing = failing_conditions(statuses)
        if failing:
            env.out()
            for line in failing:
                env.out(f"  {line}")
    else:
        env.out(dump({"problems": problems, "status": statuses}, fmt))
    return ExitStatus.SUCCESS
