"""What `kgw run` and `kgw agent` share (controller.serve): one set of serving arguments with
their owners' defaults, and bad serving flags said in one line."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from controller import signals
from controller.cli import build_parser, main
from controller.serve import PlaneOptions
from kgw_cli.admin import ADMIN_ADDRESS
from kgw_cli.env import Environment, ExitStatus
from kgw_l4 import abi, acceptor, plane
from kgw_l7.channel import WorkerOptions
from tests.helpers import ROOT, admin_json, eventually, find, free_port, kgw_cmd, running

SERVING = ["--admin-address", "127.0.0.1:1", "--workers", "2", "--access-log", "off", "--l4-mode",
           "splice",
           "--l4-interfaces", "a0,b0", "--l4-pin-dir", "/sys/fs/bpf/other", "--l4-splice-backlog",
           "7",
           "--node-address", "192.0.2.1,192.0.2.2", "--log-level", "debug", "--drain-delay", "1",
           "--drain-timeout", "2", "--response-timeout", "3", "--ignore-client-abort",
           "--l4-tcp-keepalive", "9"]


def options(*argv: str) -> PlaneOptions:
    return PlaneOptions.from_args(build_parser().parse_args(list(argv)))


def test_run_and_agent_read_the_same_serving_flags() -> None:
    expected = PlaneOptions(admin_address="127.0.0.1:1", workers=2, access_log="off",
                            l4_mode="splice",
                            l4_interfaces=("a0", "b0"), l4_pin_dir="/sys/fs/bpf/other",
                            l4_splice_backlog=7,
                            node_address=("192.0.2.1", "192.0.2.2"), drain_delay=1.0,
                            drain_timeout=2.0, response_timeout=3.0, ignore_client_abort=True,
                            l4_tcp_keepalive=9)
    assert options("run", "-c", "dir", *SERVING) == expected
    assert options("agent", *SERVING) == expected


@pytest.mark.parametrize("command", [["run", "-c", "dir"], ["agent"]])
def test_serving_defaults_are_their_owners(command: list[str]) -> None:
    assert options(*command) == PlaneOptions(
        admin_address=ADMIN_ADDRESS, workers=None, access_log=None, l4_mode=plane.DEFAULT_MODE,
        l4_interfaces=None, l4_pin_dir=abi.PIN_DIR,
        l4_splice_backlog=abi.SIZES["KGW_SPLICE_BACKLOG_MAX"],
        node_address=(), drain_delay=signals.DRAIN_DELAY, drain_timeout=signals.DRAIN_TIMEOUT,
        response_timeout=WorkerOptions().response_timeout, ignore_client_abort=False,
        l4_tcp_keepalive=acceptor.KEEPALIVE_IDLE)
    for mode in plane.MODES:
        assert options(*command, "--l4-mode", mode).l4_mode == mode


@pytest.mark.parametrize(("flags", "message"), [
    (["--node-address", "nonsense"], "error: node address 'nonsense' is not an IPv4 address"),
    (["--l4-splice-backlog", "-1"],
     "error: --l4-splice-backlog must be 0 (off) or a number of skbs, not -1"),
    (["--l4-tcp-keepalive", "-5"], "error: --l4-tcp-keepalive must be 0 (off) or seconds, not -5"),
])
def test_a_serving_flag_the_planes_refuse_is_one_line(tmp_path: Path, flags: list[str],
                                                      message: str) -> None:
    """Refused by the L4 plane before anything starts: one line and ERROR, no traceback."""
    err = io.StringIO()
    code = main(["run", "-c", str(tmp_path), "--admin-address", f"127.0.0.1:{free_port()}",
                 "--l4-mode", "userspace", *flags], Environment(stdout=io.StringIO(), stderr=err))
    assert code == ExitStatus.ERROR
    assert err.getvalue().splitlines()[-1] == message, err.getvalue()
    assert "Traceback" not in err.getvalue()


@pytest.mark.parametrize("command", [["run", "-c", "dir"], ["agent"]])
def test_access_log_flags(command: list[str]) -> None:
    got = options(*command, "--access-log-format", "text:%RESPONSE_CODE% %REQ(:PATH)%",
                  "--access-log-filter", "server-errors", "--access-log-sample", "0.5",
                  "--access-log-redact", "Authorization,X-Api-Key")
    assert (got.access_log_format, got.access_log_min_status, got.access_log_sample,
            got.access_log_redact) == ("text:%RESPONSE_CODE% %REQ(:PATH)%", 500, 0.5,
                                       ("authorization", "x-api-key"))
    default = options(*command)
    assert (default.access_log_format, default.access_log_min_status,
            default.access_log_sample) == ("json", 0, 1.0)
    assert "authorization" in default.access_log_redact and "cookie" in default.access_log_redact


@pytest.mark.parametrize(("flags", "message"), [
    (["--access-log-format", "text:%START_TIME% %BOGUS%"],
     "argument --access-log-format: access log format: unknown operator %BOGUS% at position 18"),
    (["--access-log-filter", "warnings"], "argument --access-log-filter: access log filter"),
    (["--access-log-sample", "2"], "argument --access-log-sample: access log sample '2'"),
])
def test_a_bad_access_log_flag_is_refused_at_start_up(flags: list[str], message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", "-c", "dir", *flags])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: kgw}}
spec: {{controllerName: kgw.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: test}}
spec:
  gatewayClassName: kgw
  listeners: [{{name: http, protocol: HTTP, port: {port}}}]
"""


@pytest.mark.slow
def test_run_reports_every_node_address_it_is_given(tmp_path: Path) -> None:
    """`kgw run --node-address A,B` takes the list as `kgw agent` does: Gateway status
    lists both."""
    admin = f"127.0.0.1:{free_port()}"
    (tmp_path / "gw.yaml").write_text(GATEWAY.format(port=free_port()))
    cmd = kgw_cmd("run", "-c", str(tmp_path), "--admin-address", admin, "--workers", "1",
                  "--access-log", "off", "--l4-mode", "userspace", "--drain-delay", "0",
                  "--node-address", "192.0.2.1,192.0.2.2")
    with running(cmd):
        def addresses() -> list[str]:
            gw = find(admin_json(admin, "/status"), "Gateway", "gw", "test")
            return [a["value"] for a in (gw or {}).get("status", {}).get("addresses", [])]

        assert eventually(addresses) == ["192.0.2.1", "192.0.2.2"]


def test_only_serving_commands_import_the_planes_for_their_defaults() -> None:
    """`kgw status` and `kgw validate` start as fast as before: their command line is read
    without importing the planes whose defaults `kgw run` shows."""
    code = ("import sys\n"
            "from controller.cli import build_parser\n"
            "build_parser('status').parse_args(['status'])\n"
            "build_parser('validate').parse_args(['validate', '-c', 'x'])\n"
            "assert not {'kgw_l4.plane', 'kgw_l7.channel', 'controller.signals'} & "
            "set(sys.modules)\nbuild_parser('run').parse_args(['run', '-c', 'x'])\n"
            "assert {'kgw_l4.plane', 'kgw_l7.channel'} <= set(sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
