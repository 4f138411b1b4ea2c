"""The ``kgw`` command line: the command tree is data, dispatched through a table.

Each command lives in its own module under ``controller/commands`` with a
``run(args, env) -> ExitStatus`` function; this module only declares the tree, built into
argparse by ``kgw_cli.commands`` (after httpie's manager CLI). ``kgw run`` and ``kgw
agent`` take the same serving arguments (``_serving``), whose defaults come from the
modules that own them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from kgw_cli.admin import ADMIN_ADDRESS
from kgw_cli.commands import Arg, Command, add_commands, output_arg, parse
from kgw_cli.env import Environment, ExitStatus
from kgw_l4.abi import PIN_DIR, SIZES  # (plain data: no bcc, nothing loaded)
from kgw_l4.acceptor import KEEPALIVE_IDLE  # (plain data: no sockets made)

_CONFIG: Arg = (("-c", "--config"), {"required": True, "metavar": "DIR",
                                     "help": "directory of Gateway API YAML files"})
_ADMIN: Arg = (("--admin-address",), {"default": ADMIN_ADDRESS, "metavar": "HOST:PORT",
                                      "help": f"admin API address (default {ADMIN_ADDRESS})"})


def _serving(node_address_default: str) -> tuple[Arg, ...]:
    """The arguments of both serving commands (controller.serve.PlaneOptions).

    Built when ``kgw run`` or ``kgw agent`` is parsed: the planes' modules their defaults
    come from take ~130 ms to import, which ``kgw status`` and ``kgw validate`` need not
    pay."""
    from controller.signals import DRAIN_DELAY, DRAIN_TIMEOUT
    from kgw_l4.plane import DEFAULT_MODE, MODES
    from kgw_l7.channel import WorkerOptions
    from kgw_l7.logformat import DEFAULT_REDACT, FILTERS, parse_filter, parse_format, parse_sample
    from kgw_l7.tracing_config import parse_ratio

    l7_defaults = WorkerOptions()
    # The L7 plane: its workers and what they log.
    l7_plane: tuple[Arg, ...] = (
        (("--workers",),
         {"type": int, "default": None, "help": "L7 worker processes (default: one per CPU)"}),
        (("--access-log",), {"default": None, "metavar": "PATH|otlp[:URL]|off",
                             "help": "access log file; 'otlp' or 'otlp:URL' exports the lines "
                                     "as OTLP log records (URL: the collector, e.g. "
                                     "http://collector:4318; 'otlp': "
                                     "OTEL_EXPORTER_OTLP_[LOGS_]ENDPOINT); 'off' disables it; "
                                     "default stdout"}),
        (("--access-log-format",), {
            "default": l7_defaults.access_log_format, "metavar": "json|text|text:TEMPLATE",
            "type": _checked(lambda v: (parse_format(v), v)[1]),
            "help": "access log lines: JSON objects (default), or Envoy command operators "
                    "('text:[%%START_TIME%%] %%REQ(:METHOD)%% %%RESPONSE_CODE%%...'; 'text': "
                    "Envoy's default format)"}),
        (("--access-log-filter",), {
            "default": 0, "metavar": "|".join(FILTERS), "type": _checked(parse_filter),
            "help": "log only errors (status >= 400) or server errors (>= 500); default all"}),
        (("--access-log-sample",), {
            "default": l7_defaults.access_log_sample, "metavar": "RATIO",
            "type": _checked(parse_sample),
            "help": "log this share of requests, 0 < RATIO <= 1 (after the filter; default 1)"}),
        (("--access-log-redact",), {
            "default": ",".join(DEFAULT_REDACT), "metavar": "HEADER[,HEADER]",
            "help": "request headers whose values are never logged, '[redacted]' instead "
                    "(default %(default)s)"}),
    )
    # Tracing (kgw_l7.tracing): off unless an endpoint is given here or in the OTEL_* variables.
    tracing: tuple[Arg, ...] = (
        (("--tracing-endpoint",), {
            "default": None, "metavar": "URL",
            "help": "OTLP collector to export trace spans to, e.g. http://collector:4318 "
                    "(default: OTEL_EXPORTER_OTLP_ENDPOINT; neither: tracing is off); over "
                    "gRPC (http://collector:4317) when OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}),
        (("--tracing-sample",), {
            "default": None, "metavar": "RATIO", "type": _checked(parse_ratio),
            "help": "share of new traces sampled, 0 <= RATIO <= 1; a client's sampled flag is "
                    "followed (default: OTEL_TRACES_SAMPLER/_ARG, else all)"}),
    )
    # The L4 plane: how it carries TCP/UDP/TLS passthrough, where, and its kernel state.
    l4_plane: tuple[Arg, ...] = (
        (("--l4-mode",), {"choices": MODES, "default": DEFAULT_MODE,
                          "help": f"how TCPRoute/UDPRoute/TLS passthrough traffic is carried "
                                  f"(default {DEFAULT_MODE})"}),
        (("--l4-interfaces",), {"default": None, "metavar": "DEV[,DEV]",
                                "help": "devices the kernel data plane attaches to (default: all "
                                        "up, non-loopback)"}),
        (("--l4-pin-dir",), {"default": PIN_DIR, "metavar": "DIR",
                             "help": "where the kernel data plane pins its maps and programs; a "
                                     "restart "
                                     f"with the same directory adopts them (default {PIN_DIR})"}),
        (("--l4-splice-backlog",), {
            "type": int, "default": SIZES["KGW_SPLICE_BACKLOG_MAX"], "metavar": "SKBS",
            "help": "splice backpressure: hold a spliced direction once its peer has more than "
                    "SKBS "
                    "skbs queued (default %(default)s; 1024 is about 64 MB; 0: off, the queue is "
                    "then unbounded)"}),
        (("--l4-tcp-keepalive",), {
            "type": int, "default": KEEPALIVE_IDLE, "metavar": "SECONDS",
            "help": "TCP keepalive of the connections the L4 proxies accept (TCPRoute in splice "
                    "or userspace mode, TLS passthrough): the first probe after SECONDS of "
                    "silence; after 5 unanswered ones SECONDS/10 apart, a client that vanished "
                    "is dropped with its backend connection (default %(default)s; 0: off)"}),
    )
    node_address: Arg = (("--node-address",), {
        "default": None, "metavar": "ADDR[,ADDR]",
        "help": f"addresses reported in Gateway status; the first IPv4 one that is not loopback is "
                f"the SNAT source of every backend (default: {node_address_default}; SNAT then "
                f"follows each backend's route)"})
    log_level: Arg = (("--log-level",),
                      {"default": "info", "choices": ("debug", "info", "warning", "error")})
    # How the L7 proxy bounds what backends and clients can hold, and how it shuts down
    # (controller.signals: SIGTERM).
    lifecycle: tuple[Arg, ...] = (
        (("--drain-delay",), {"type": float, "default": DRAIN_DELAY, "metavar": "SECONDS",
                              "help": "on SIGTERM, /readyz turns not ready and the listeners keep "
                                      "accepting "
                                      "this long, so load balancers move away (default "
                                      "%(default)g; SIGINT skips it)"}),
        (("--drain-timeout",), {"type": float, "default": DRAIN_TIMEOUT, "metavar": "SECONDS",
                                "help": "then the listeners close and requests in flight get this "
                                        "long to finish (default %(default)g)"}),
        (("--response-timeout",),
         {"type": float, "default": l7_defaults.response_timeout, "metavar": "SECONDS",
          "help": "a backend that sends nothing this long while a response is awaited "
                  "or relayed gets 504 (routes with timeouts use theirs; default "
                  "%(default)g, 0: none)"}),
        (("--ignore-client-abort",), {"action": "store_true",
                                      "help": "keep serving a request whose client closed its side "
                                              "(FIN); by "
                                              "default the request and its backend connection are "
                                              "abandoned, as nginx does"}),
    )
    # Where Ingresses of kgw's IngressClasses are served (an IngressClass's parameters
    # ConfigMap, when it names one, says instead: docs/ingress.md).
    ingress: tuple[Arg, ...] = (
        (("--ingress-http-port",), {"type": int, "default": 80, "metavar": "PORT",
                                    "help": "serve Ingresses over HTTP on this port of every "
                                            "node address (default %(default)d; 0: not at all)"}),
        (("--ingress-https-port",), {"type": int, "default": 443, "metavar": "PORT",
                                     "help": "and over HTTPS (spec.tls) on this one (default "
                                             "%(default)d; 0: not at all)"}),
    )
    return (*l7_plane, *tracing, *l4_plane, node_address, log_level, *lifecycle, *ingress)


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` saying a bad value's own message (a ValueError's is lost)."""
    def check(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return check


#: name -> the command, whose handler is a module under controller.commands
COMMANDS: dict[str, Command[str]] = {
    "run": Command("serve the Gateway API objects in a directory (standalone mode)", "run",
                   lambda: (_CONFIG, _ADMIN, *_serving("discovered"))),
    "agent": Command(
        "run in a cluster (one per node): watch the API server, serve, write status as the Lease "
        "holder",
        "agent", lambda: (
            (("--kubeconfig",), {"default": None, "metavar": "PATH",
                                 "help": "kubeconfig file (default: in-cluster, else $KUBECONFIG "
                                         "or ~/.kube/config)"}),
            (("--namespace-selector",), {"default": "", "metavar": "SELECTOR",
                                         "help": "read only namespaces matching this label "
                                                 "selector (default: all)"}),
            (("--lease-namespace",), {"default": None, "metavar": "NS",
                                      "help": "namespace of the status-writer Lease (default: "
                                              "$POD_NAMESPACE)"}),
            (("--lease-name",), {"default": "kgw-status-writer", "metavar": "NAME",
                                 "help": "name of the status-writer Lease (default "
                                         "kgw-status-writer)"}),
            (("--identity",), {"default": None, "metavar": "ID",
                               "help": "this agent's Lease holder identity (default: $POD_NAME, "
                                       "else the hostname)"}),
            _ADMIN,
            (("--metrics-address",), {"default": None, "metavar": "HOST:PORT",
                                      "help": "also serve /metrics, /healthz and /readyz (only "
                                              "those) here"}),
            *_serving("$NODE_IP, else discovered"))),
    "validate": Command("check a directory offline: every problem and the status each object would "
                        "get", "validate", (_CONFIG, output_arg())),
    "translate": Command("print the data-plane configurations a directory translates to",
                         "translate", (_CONFIG, output_arg(("json", "yaml"), "json"), (
                             ("--to-gateway-api",),
                             {"action": "store_true",
                              "help": "print instead the Gateway and HTTPRoutes equivalent to "
                                      "the directory's Ingresses, to migrate them"}))),
    "status": Command("show the running gateway's objects, conditions and reasons", "status",
                      (_ADMIN, output_arg())),
    "echo": Command("run the echo backend used by the demo, tests and conformance", "echo"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole tree; with ``only``, the arguments of that command alone."""
    parser = argparse.ArgumentParser(prog="kgw", description="kgw: a Gateway API gateway")
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), COMMANDS,
                 only)
    return parser


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["echo"]:  # the echo backend parses its own flags
        from kgw_l7 import echo
        return int(echo.main(argv[1:]))
    args = parse(build_parser(argv[0] if argv[:1] and argv[0] in COMMANDS else None), argv, env)
    if isinstance(args, ExitStatus):
        return int(args)
    module = importlib.import_module(f"controller.commands.{COMMANDS[args.command].handler}")
    try:
        return int(module.run(args, env))
    except KeyboardInterrupt:
        return int(ExitStatus.INTERRUPTED)


if __name__ == "__main__":
    raise SystemExit(main())
