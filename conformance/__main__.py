"""``python -m conformance --suite DIR``: replay the Gateway API conformance suite against kgw.

Prints one line per test and a summary line per profile, writes a ConformanceReport
YAML. Exit status: 0 when no test fails in the profiles run (``--fail-on core`` only
counts core tests; ``none`` always exits 0 once the report is written), 1 otherwise,
2 for usage errors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conformance.features import PROFILES, SUPPORTED_FEATURES
from conformance.loader import SuiteError, load_suite
from conformance.runner import Options, Runner

DEFAULT_SUITE = Path(__file__).resolve().parents[2] / "shared" / "conformance"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.splitlines()[0])
    p.add_argument("--suite", type=Path, default=DEFAULT_SUITE, metavar="DIR",
                   help=f"the suite as data (default {DEFAULT_SUITE})")
    p.add_argument("--run", default="", metavar="TEST[,TEST]", help="run only these tests")
    p.add_argument("--profile", action="append", choices=PROFILES, metavar="PROFILE",
                   help=f"profile to report (repeatable; default all: {', '.join(PROFILES)})")
    p.add_argument("--report", type=Path, default=Path("conformance-report.yaml"), metavar="FILE",
                   help="where to write the report (default ./conformance-report.yaml)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (config, logs) for debugging")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                   help="work directory (default: a temporary one)")
    p.add_argument("--skip-provisional", action="store_true",
                   help="skip provisional tests (upstream runs them)")
    p.add_argument("--status-timeout", type=float, default=30.0, metavar="S",
                   help="cap on every status helper's timeout (0: upstream's own, up to 300 s; "
                        "default 30)")
    p.add_argument("--workers", type=int, default=1, help="L7 workers for kgw run (default 1)")
    p.add_argument("--l4-mode", choices=("userspace", "splice"), default="userspace",
                   help="kgw run's L4 data plane for TCP/TLS-passthrough listeners (default "
                        "userspace: the "
                        "kernel modes attach to non-loopback interfaces, and --isolate leaves only "
                        "lo)")
    p.add_argument("--supported-features", default="", metavar="F[,F]",
                   help="claim exactly these features instead of conformance/features.py (as "
                        "upstream's flag)")
    p.add_argument("--exempt-features", default="", metavar="F[,F]",
                   help="drop these from the claimed features (as upstream's flag)")
    p.add_argument("--claim", default="", metavar="F[,F]",
                   help="claim these features too, on top of the claim (to replay what kgw does "
                        "not claim yet, "
                        "e.g. --claim GRPCRoute for the GRPC profile, --claim "
                        "HTTPRouteBackendProtocolH2C)")
    p.add_argument("--fail-on", choices=("any", "core", "none"), default="core",
                   help="which failures make the exit status non-zero (default core)")
    p.add_argument("--isolate", action="store_true",
                   help="run in a network namespace of its own (unshare --net; needs root), so "
                        "that nothing else on the machine can hold the Gateways' ports")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print every check and request group")
    return p


ISOLATED_ENV = "KGW_CONFORMANCE_ISOLATED"


def _reexec_isolated(argv: list[str]) -> None:
    """Run this same command again in a new network namespace with loopback up; when
    namespaces are not available here, say so and carry on in this one."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    usable = bool(unshare and ip) and subprocess.run(
        [unshare or "unshare", "--net", "true"], capture_output=True).returncode == 0
    os.environ[ISOLATED_ENV] = "1"
    if not usable:
        print("warning: --isolate: cannot create a network namespace here (needs root, unshare and "
              "ip); running in the current one", file=sys.stderr)
        return
    assert unshare is not None and ip is not None
    cmd = [unshare, "--net", "--", "sh", "-c", f'{ip} link set lo up && exec "$@"', "sh",
           sys.executable, "-m", "conformance", *argv]
    assert unshare is not None and ip is not None
    assert unshare is not None and ip is not None
    os.execv(unshare, cmd)


def _names(text: str) -> frozenset[str]:
    return frozenset(f.strip() for f in text.split(",") if f.strip())


def claimed(supported_features: str = "", claim: str = "", exempt: str = "") -> frozenset[str]:
    """The features the run claims: ``--supported-features`` (or features.py), plus
    ``--claim``, minus ``--exempt-features``."""
    return ((_names(supported_features) or SUPPORTED_FEATURES) | _names(claim)) - _names(exempt)


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    if args.isolate and not os.environ.get(ISOLATED_ENV):
        _reexec_isolated(raw)
    try:
        suite = load_suite(args.suite)
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    profiles = args.profile or list(PROFILES)
    supported = claimed(args.supported_features, args.claim, args.exempt_features)
    opts = Options(suite=args.suite, run=[n for n in args.run.split(",") if n], profiles=profiles,
                   report=args.report, keep=args.keep, verbose=args.verbose,
                   skip_provisional=args.skip_provisional,
                   status_timeout=args.status_timeout or None, workers=args.workers,
                   workdir=args.workdir, supported=supported, l4_mode=args.l4_mode)
    started = time.monotonic()
    runner = Runner(suite, opts, out=lambda m: print(m, flush=True))
    try:
        report = runner.run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        report = runner.report
    from importlib.metadata import PackageNotFoundError, version
    try:
        kgw_version = version("kgw")
    except PackageNotFoundError:
        kgw_version = "dev"
    args.report.write_text(report.to_yaml(profiles, version=kgw_version))
    for line in report.summary_lines(profiles):
        print(line)
    print(f"report: {args.report} ({time.monotonic() - started:.0f}s)")
    if report.setup_problem:
        print(f"setup problem: {report.setup_problem}")
    failed = 0
    for p in profiles:
        _, core_failed, _, _ = report.counts(p, "core")
        _, ext_failed, _, _ = report.counts(p, "extended")
        failed += core_failed + (ext_failed if args.fail_on == "any" else 0)
    return 1 if failed and args.fail_on != "none" else 0


if __name__ == "__main__":
    raise SystemExit(main())
