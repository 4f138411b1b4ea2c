"""``kgw validate -c DIR``: everything wrong with a directory, without serving it."""

from __future__ import annotations

import argparse

from controller.confloop import located
from controller.files import FileSource
from controller.status import StatusBook
from controller.statusview import status_text, unhealthy_objects
from controller.store import Store
from controller.gwaddress import offline_options
from controller.translate import translate
from kgw_cli.env import Environment, ExitStatus
from kgw_cli.output import dump


def run(args: argparse.Namespace, env: Environment) -> ExitStatus:
    source = FileSource(args.config, watch=False)
    batch = source.load()
    store = Store()
    store.apply(batch.events)
    book = StatusBook(clock=lambda: None)  # offline: no transition times
    t = translate(store, offline_options(store))
    book.update(t.statuses)
    problems = [*batch.problems, *located(source, t.problems)]
    statuses = book.as_list(store.get_key)
    for item in statuses["items"]:
        _drop_times(item)
    bad = unhealthy_objects(statuses)
    # What a migrating user must know kgw does not do for an Ingress (not a problem: the
    # rest of the Ingress is served).
    ignored = [f"{source.origin(k) or k}: {k}: annotation {a} is not carried: {why}"
               for k, a, why in t.ingress.ignored]
    fmt = env.default_format(args.output)
    if fmt == "table":
        env.out(status_text([str(p) for p in problems], statuses))
        if ignored:
            env.out()
            env.out("ignored Ingress annotations:")
            for line in ignored:
                env.out(f"  {line}")
        env.out()
        env.out(f"{len(store)} objects, {len(batch.problems)} refused, "
                f"{len(problems) - len(batch.problems)} "
                f"other problems, {len(bad)} with a failing condition")
    else:
        env.out(dump({"problems": [str(p) for p in problems], "status": statuses,
                      "unhealthy": bad, "ignoredAnnotations": ignored}, fmt))
    return ExitStatus.INVALID if problems or bad else ExitStatus.SUCCESS


def _drop_times(value: object) -> None:
    if isinstance(value, dict):
        value.pop("lastTransitionTime", None)
        for v in value.values():
            _drop_times(v)
    elif isinstance(value, list):
        for v in value:
            _drop_times(v)
