"""The ``kgw`` command line: the command tree is data, dispatched through a table.

Each command lives in its own module under ``controller/commands`` with a
``run(args, env) -> ExitStatus`` function; this module only declares the tree, built into
argparse by ``kgw_cli.commands`` (after httpie's manager CLI).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from kgw_cli.admin import ADMIN_ADDRESS
from kgw_cli.commands import Arg, Command, add_commands, output_arg, parse
from kgw_cli.env import Environment, ExitStatus
from kgw_l4.abi import SIZES  # (plain data: no bcc, nothing loaded)

_CONFIG: Arg = (("-c", "--config"), {"required": True, "metavar": "DIR",
                                     "help": "directory of Gateway API YAML files"})
_ADMIN: Arg = (("--admin-address",), {"default": ADMIN_ADDRESS, "metavar": "HOST:PORT",
                                      "help": f"admin API address (default {ADMIN_ADDRESS})"})

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

#: name -> the command, whose handler is a module under controller.commands
COMMANDS: dict[str, Command[str]] = {
    "run": Command("serve the Gateway API objects in a directory (standalone mode)", "run", (
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
    "agent": Command("run in a cluster (one per node): watch the API server, serve, write status as the Lease holder",
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
    "validate": Command("check a directory offline: every problem and the status each object would get",
                        "validate", (_CONFIG, output_arg())),
    "translate": Command("print the data-plane configurations a directory translates to", "translate", (
        _CONFIG, output_arg(("json", "yaml"), "json"))),
    "status": Command("show the running gateway's objects, conditions and reasons", "status",
                      (_ADMIN, output_arg())),
    "echo": Command("run the echo backend used by the demo, tests and conformance", "echo"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kgw", description="kgw: a Gateway API gateway")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), COMMANDS)
    return parser


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["echo"]:  # the echo backend parses its own flags
        from kgw_l7 import echo
        return int(echo.main(argv[1:]))
    args = parse(build_parser(), argv, env)
    if isinstance(args, ExitStatus):
        return int(args)
    module = importlib.import_module(f"controller.commands.{COMMANDS[args.command].handler}")
    try:
        return int(module.run(args, env))
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)


if __name__ == "__main__":
    raise SystemExit(main())
