"""``kgw translate -c DIR``: the data-plane configurations a directory becomes (private keys
shown as fingerprints: controller.redact). With ``--to-gateway-api``: the Gateway API
objects equivalent to its Ingresses (controller/ingress/migrate.py)."""

from __future__ import annotations

import argparse

from controller.files import FileSource
from controller.gwaddress import offline_options
from controller.ingress import migrate
from controller.ingress.stage import conversion
from controller.redact import redact
from controller.store import Store
from controller.translate import translate
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.output import dump


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    batch = FileSource(args.config, watch=False).load()
    for p in batch.problems:
        env.err(f"error: {p}")
    store = Store()
    store.apply(batch.events)
    if args.to_gateway_api:
        options = offline_options(store)
        conv = conversion(store, options.ingress, options.controller_name)
        for p in conv.problems:
            env.err(f"warning: {p}")
        for key, annotation, why in conv.ignored:
            env.err(f"warning: {key}: annotation {annotation} is not carried: {why}")
        env.out(dump(migrate.as_list(conv), args.output))
        return ExitStatus.SUCCESS
    t = translate(store, offline_options(store))
    env.out(dump(redact({"l7": t.l7.to_dict(), "l4": t.l4.to_dict()}), args.output))
    return ExitStatus.SUCCESS
