"""The ``kgw`` command line: the command tree is data, dispatched through a table.

Each command lives in its own module under ``controller/commands`` with a
``run(args, env) -> ExitStatus`` function; this module only declares the tree and
builds argparse from it (after httpie's manager CLI).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Sequence

from controller.env import Environment, ExitStatus
from kgw_l4.abi import SIZES  # (plain data: no bcc, nothing loaded)

DEFAULT_ADMIN = "127.0.0.1:9095"

_CONFIG = (("-c", "--config"), {"required": True, "metavar": "DIR",
                                 "help": "directory of Gateway API YAML files"})
_OUTPUT = (("-o", "--output"), {"choices": ("table", "json", "yaml"), "default": None,
                                 "help": "output format (default: table on a terminal, json otherwise)"})
_ADMIN = (("--admin-address",), {"default": DEFAULT_ADMIN, "metavar": "HOST:PORT",
                                   "help": f"admin API address (default {DEFAULT_ADMIN})"})

_L4_SPLICE_BACKLOG = (("--l4-splice-backlog",), {
    "type": int, "default": SIZES["KGW_SPLICE_BACKLOG_MAX"], "metavar": "SKBS",
    "help": "splice backpressure: hold a spliced direction once its peer has more than SKBS "
            "skbs queued (default %(default)s; 1024 is about 64 MB; 0: off, the queue is "
            "then unbounded)"})

_L4_PIN_DIR = (("--l4-pin-dir",), {"default": "/sys/fs/bpf/kgw", "metavar": "DIR",
                                   "help": "where the kernel data plane pins its maps and programs; a restart "
                                           "with the same directory adopts them (default /sys/fs/bpf/kgw)"})

#: How the L7 proxy bounds what clients and backends can hold, and how it shuts down (both
#: commands). The DaemonSet's terminationGracePeriodSeconds (30) covers delay + timeout.
_L7_LIFECYCLE = (
    (("--drain-delay",), {"type": float, "default": 5.0, "metavar": "SECONDS",
                          "help": "on SIGTERM, /readyz turns not ready and the listeners keep accepting this "
                                  "long, so load balancers move away (default 5; SIGINT skips it)"}),
    (("--drain-timeout",), {"type": float, "default": 20.0, "metavar": "SECONDS",
                            "help": "then the listeners close and requests in flight get this long to finish "
                                    "(default 20)"}),
    (("--response-timeout",), {"type": float, "default": 15.0, "metavar": "SECONDS",
                               "help": "a backend that sends nothing this long while a response is awaited or "
                                       "relayed gets 504 (routes with timeouts use theirs; default 15, 0: none)"}),
    (("--ignore-client-abort",), {"action": "store_true",
                                  "help": "keep serving a request whose client closed its side (FIN); by default "
                                          "the request and its backend connection are abandoned, as nginx does"}),
)

#: name -> (help, module under controller.commands, arguments)
COMMANDS: dict[str, tuple[str, str, tuple[tuple[tuple[str, ...], dict[str, Any]], ...]]] = {
    "run": ("serve the Gateway API objects in a directory (standalone mode)", "run", (
        _CONFIG, _ADMIN,
        (("--workers",), {"type": int, "default": None, "help": "L7 worker processes (default: one per CPU)"}),
        (("--access-log",), {"default": None, "metavar": "PATH",
                             "help": "access log file ('off' to disable; default stdout)"}),
        (("--l4-mode",), {"choices": ("auto", "tc", "xdp", "splice", "userspace"), "default": "auto",
                          "help": "how TCPRoute/UDPRoute/TLS passthrough traffic is carried (default auto)"}),
        (("--l4-interfaces",), {"default": None, "metavar": "DEV[,DEV]",
                                "help": "devices the kernel data plane attaches to (default: all up, non-loopback)"}),
        _L4_PIN_DIR,
        _L4_SPLICE_BACKLOG,
        (("--node-address",), {"default": None, "metavar": "ADDR",
                               "help": "address reported in Gateway status and used for SNAT (default: discovered)"}),
        (("--log-level",), {"default": "info", "choices": ("debug", "info", "warning", "error")}),
        *_L7_LIFECYCLE,
    )),
    "agent": ("run in a cluster (one per node): watch the API server, serve, write status as the Lease holder",
              "agent", (
        (("--kubeconfig",), {"default": None, "metavar": "PATH",
                             "help": "kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)"}),
        (("--namespace-selector",), {"default": "", "metavar": "SELECTOR",
                                     "help": "read only namespaces matching this label selector (default: all)"}),
        (("--lease-namespace",), {"default": None, "metavar": "NS",
                                  "help": "namespace of the status-writer Lease (default: $POD_NAMESPACE)"}),
        (("--lease-name",), {"default": "kgw-status-writer", "metavar": "NAME",
                             "help": "name of the status-writer Lease (default kgw-status-writer)"}),
        (("--identity",), {"default": None, "metavar": "ID",
                           "help": "this agent's Lease holder identity (default: $POD_NAME, else the hostname)"}),
        _ADMIN,
        (("--metrics-address",), {"default": None, "metavar": "HOST:PORT",
                                  "help": "also serve /metrics, /healthz and /readyz (only those) here"}),
        (("--workers",), {"type": int, "default": None, "help": "L7 worker processes (default: one per CPU)"}),
        (("--access-log",), {"default": None, "metavar": "PATH",
                             "help": "access log file ('off' to disable; default stdout)"}),
        (("--l4-mode",), {"choices": ("auto", "tc", "xdp", "splice", "userspace"), "default": "auto",
                          "help": "how TCPRoute/UDPRoute/TLS passthrough traffic is carried (default auto)"}),
        (("--l4-interfaces",), {"default": None, "metavar": "DEV[,DEV]",
                                "help": "devices the kernel data plane attaches to (default: all up, non-loopback)"}),
        _L4_PIN_DIR,
        _L4_SPLICE_BACKLOG,
        (("--node-address",), {"default": None, "metavar": "ADDR",
                               "help": "address reported in Gateway status and used for SNAT "
                                       "(default: $NODE_IP, else discovered)"}),
        (("--log-level",), {"default": "info", "choices": ("debug", "info", "warning", "error")}),
        *_L7_LIFECYCLE,
    )),
    "validate": ("check a directory offline: every problem and the status each object would get", "validate", (
        _CONFIG, _OUTPUT)),
    "translate": ("print the data-plane configurations a directory translates to", "translate", (
        _CONFIG, (("-o", "--output"), {"choices": ("json", "yaml"), "default": "json"}))),
    "status": ("show the running gateway's objects, conditions and reasons", "status", (_ADMIN, _OUTPUT)),
    "echo": ("run the echo backend used by the demo, tests and conformance", "echo", ()),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgw", description="kgw: a Gateway API gateway")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_, _module, arguments) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        for flags, kwargs in arguments:
            p.add_argument(*flags, **kwargs)
    return parser


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["echo"]:  # the echo backend parses its own flags
        from kgw_l7 import echo
        return int(echo.main(argv[1:]))
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"controller.commands.{COMMANDS[args.command][1]}")
    try:
        return int(module.run(args, env))
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)


if __name__ == "__main__":
    raise SystemExit(main())
