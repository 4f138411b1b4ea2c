"""``kgw translate -c DIR``: the data-plane configurations a directory becomes (private keys
shown as fingerprints: controller.redact)."""

from __future__ import annotations

import argparse

from controller.files import FileSource
from controller.redact import redact
from controller.store import Store
from controller.gwaddress import offline_options
from controller.translate import translate
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.output import dump


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    batch = FileSource(args.config, watch=False).load()
    for p in batch.problems:
        env.err(f"error: {p}")
    store = Store()
    store.apply(batch.events)
    t = translate(store, offline_options(store))
    env.out(dump(redact({"l7": t.l7.to_dict(), "l4": t.l4.to_dict()}), args.output))
    return ExitStatus.SUCCESS
