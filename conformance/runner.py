"""One conformance run: select tests, set up the world once, run tests one by one, report.

ONE ``kgw run`` and one set of base echo pods serve the whole run. Each test's manifests
are added as one file, its checks and cases run, then the file is removed and the run
waits until kgw's status no longer lists the test's objects, so tests do not see each
other's leftovers.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from conformance import certs
from conformance.backends import EchoFleet
from conformance.features import (ONLY_WITHOUT, PROFILES, SUPPORTED_FEATURES, missing_features,
                                  profile_supported)
from conformance.loader import (GATEWAY_CLASS_NAME, Suite, TestCase, container_env,
                                is_coredns_deployment, read_manifest)
from conformance.replay import Replayer
from conformance.report import FAILED, PASSED, SKIPPED, Report, TestResult
from conformance.scenarios import NOT_REPLAYABLE, StepFailed, TestRun, scenario_for
from conformance.status_checks import AdminClient, CheckFailed, HarnessGap, StatusChecker, Timeouts
from conformance.world import World

ROOT = Path(__file__).resolve().parents[1]
BASE_NAMESPACES = ["gateway-conformance-infra", "gateway-conformance-app-backend",
                   "gateway-conformance-web-backend"]
CLEANUP_TIMEOUT_S = 10.0  # upstream DeleteTimeout
READY_TIMEOUT_S = 60.0


@dataclass
class Options:
    suite: Path
    run: list[str] = field(default_factory=list)
    profiles: list[str] = field(default_factory=lambda: list(PROFILES))
    report: Path = Path("conformance-report.yaml")
    keep: bool = False
    verbose: bool = False
    skip_provisional: bool = False
    status_timeout: float | None = 30.0
    workers: int = 1
    l4_mode: str = "userspace"  # loopback-only Gateways: the kernel modes need a real interface
    workdir: Path | None = None
    supported: frozenset[str] = SUPPORTED_FEATURES
    python: str = sys.executable


@dataclass(frozen=True)
class Plan:
    """Which tests run and, for the others, why they are skipped (or, as upstream,
    passed without a step: ONLY_WITHOUT)."""

    run: list[TestCase]
    skipped: dict[str, str]
    passed: dict[str, str] = field(default_factory=dict)


def plan(suite: Suite, opts: Options) -> Plan:
    wanted = set(opts.run)
    unknown = wanted - {t.name for t in suite.tests}
    if unknown:
        raise SystemExit(f"unknown test(s): {', '.join(sorted(unknown))}")
    run, skipped, passed = [], {}, {}
    for t in suite.tests:
        profiles = [p for p in t.profiles if p in opts.profiles]
        if not profiles:
            continue
        if wanted and t.name not in wanted:
            skipped[t.name] = "not selected (--run)"
        elif not any(profile_supported(p, opts.supported) for p in profiles):
            skipped[t.name] = (f"profile {'/'.join(profiles)} not supported "
                               "(core features not all claimed)")
        elif missing := missing_features(t.features, opts.supported):
            skipped[t.name] = f"unsupported features: {', '.join(missing)}"
        elif t.provisional and opts.skip_provisional:
            skipped[t.name] = "provisional (--skip-provisional)"
        elif ONLY_WITHOUT.get(t.name, "") in opts.supported:
            passed[
                t.name] = (f"{ONLY_WITHOUT[t.name]} is supported: upstream's test returns at once "
                           "(a pass) and checks nothing")
        elif t.name in NOT_REPLAYABLE:
            skipped[t.name] = f"harness: {NOT_REPLAYABLE[t.name]}"
        else:
            run.append(t)
    return Plan(run, skipped, passed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runner:
    def __init__(self, suite: Suite, opts: Options, out: Callable[[str], None] = print) -> None:
        self.suite = suite
        self.opts = opts
        self.out = out
        self.report = Report(supported=opts.supported)
        for t in suite.tests:
            self.report.add_test(
                t.name, {p: lvl for p, lvl in t.profiles.items() if p in opts.profiles}, t.features)
        self.kgw: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None

    def log(self, msg: str) -> None:
        if self.opts.verbose:
            self.out(msg)

    # -- the run --

    def run(self) -> Report:
        p = plan(self.suite, self.opts)
        provisional = {t.name for t in self.suite.tests if t.provisional}
        for name, why in p.skipped.items():
            self.report.record(TestResult(name, SKIPPED, why, provisional=name in provisional))
        for name, why in p.passed.items():
            self.out(f"PASS {name} (0.0s): {why}")
            self.report.record(TestResult(name, PASSED, why, provisional=name in provisional))
        if not p.run:
            return self.report
        self.workdir = self.opts.workdir or Path(tempfile.mkdtemp(prefix="kgw-conformance-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        generated = certs.generate()
        fleet = EchoFleet(self.workdir, python=self.opts.python, cwd=ROOT)
        world = World(self.workdir, fleet, secrets=generated.objects, wants=self._wants_deployment)
        admin_addr = f"127.0.0.1:{free_port()}"
        admin = AdminClient(admin_addr)
        checker = StatusChecker(admin, Timeouts(self.opts.status_timeout),
                                pods_ready=world.pods_ready,
                                skip_readiness=world.skip_readiness,
                                spec_listeners=world.gateway_listeners,
                                exists=world.exists, gateways_in=world.gateways_in, log=self.log)

        def secret_pair(ns: str, name: str) -> tuple[bytes, bytes]:
            pair = generated.pair(ns, name)
            return pair.cert_pem, pair.key_pem

        replayer = Replayer(checker, secret_pair=secret_pair, mirror_log_has=fleet.log_has,
                            mirror_log_count=fleet.log_count, log=self.log, ca_pem=generated.ca)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            try:
                world.setup_base(self.suite.base_manifest)
            except (RuntimeError, OSError) as exc:
                self.report.setup_problem = f"echo backends: {exc}"
                for t in p.run:
                    self.report.record(TestResult(t.name, FAILED, f"suite setup failed: {exc}",
                                                  "setup", provisional=t.provisional))
                return self.report
            self._start_kgw(world, admin_addr)
            self._setup_checks(admin, checker)
            for t in p.run:
                self.report.record(self._run_test(t, world, checker, replayer))
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._stop_kgw()
            world.close()
            for line in self._kgw_errors():
                self.out(f"kgw.log: {line}")
            if not self.opts.keep and self.opts.workdir is None:
                shutil.rmtree(self.workdir, ignore_errors=True)
            elif self.opts.keep:
                self.out(f"work directory kept: {self.workdir}")
        return self.report

    def _wants_deployment(self, deployment: dict) -> bool:
        """gRPC, TCP and UDP echo modes serve only the GRPC, TCP, TLS and UDP profiles: run
        them when those are claimed (the gRPC mode is what the GRPCRoute tests call, the TCP
        mode what the TCPRoute tests and the TLS-passthrough tests' tcp-backend speak, the
        UDP mode what the UDPRoute tests' backends answer)."""
        if is_coredns_deployment(deployment):
            return "UDPRoute" in self.opts.supported
        env = container_env(deployment)
        if env.get("GRPC_ECHO_SERVER"):
            return "GRPCRoute" in self.opts.supported
        if env.get("TCP_ECHO_SERVER"):
            return bool({"TCPRoute", "TLSRoute"} & self.opts.supported)
        if env.get("UDP_ECHO_SERVER"):
            return "UDPRoute" in self.opts.supported
        return True

    def _start_kgw(self, world: World, admin_addr: str) -> None:
        assert self.workdir is not None
        cmd = [self.opts.python, "-m", "controller.cli", "run", "-c", str(world.config),
               "--admin-address", admin_addr, "--workers", str(self.opts.workers),
               "--access-log", "off", "--l4-mode", self.opts.l4_mode]
        self.log("starting: " + " ".join(cmd))
        with open(self.workdir / "kgw.log", "ab") as logf:
            self.kgw = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def _stop_kgw(self) -> None:
        if self.kgw is None or self.kgw.poll() is not None:
            return
        self.kgw.send_signal(signal.SIGTERM)
        try:
            self.kgw.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kgw.kill()
            self.kgw.wait()

    def _kgw_exit(self) -> str:
        if self.kgw is None or self.kgw.poll() is None:
            return ""
        tail = ""
        if self.workdir is not None:
            try:
                tail = (self.workdir / "kgw.log").read_text(errors="replace").strip().splitlines()[
                    -1]
            except (OSError, IndexError):
                pass
        return f"kgw run exited with status {self.kgw.returncode}" + (f" (last log line: {tail})"
                                                                      if tail else "")

    def _kgw_errors(self, limit: int = 5) -> list[str]:
        """Distinct ERROR lines kgw logged during the run (the first few), to point at the
        component when tests fail."""
        if self.workdir is None:
            return []
        try:
            lines = (self.workdir / "kgw.log").read_text(errors="replace").splitlines()
        except OSError:
            return []
        stamp = re.compile(r"^\d{4}-\d\d-\d\d ")
        seen: dict[str, None] = {}
        for i, line in enumerate(lines):
            if " ERROR " not in line:
                continue
            msg = line.split(" ERROR ", 1)[1]
            follow = []
            for nxt in lines[i + 1:i + 60]:
                if stamp.match(nxt):
                    break
                follow.append(nxt.strip())
            if follow and follow[-1]:
                msg = f"{msg} -- {follow[-1]}"  # the exception a traceback ends with
            seen.setdefault(msg[:300], None)
        out = list(seen)[:limit]
        if len(seen) > limit:
            out.append(f"... and {len(seen) - limit} more distinct ERROR lines")
        return out

    def _setup_checks(self, admin: AdminClient, checker: StatusChecker) -> None:
        """Upstream Setup: the GatewayClass is Accepted and the base namespaces are ready."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not admin.ready():
            if self._kgw_exit() or time.monotonic() > deadline:
                self.report.setup_problem = (self._kgw_exit()
                                             or f"/readyz not 200 within {READY_TIMEOUT_S:.0f}s")
                self.out(f"setup: {self.report.setup_problem}")
                return
            time.sleep(0.1)
        try:
            checker.GWCMustHaveAcceptedConditionTrue(GATEWAY_CLASS_NAME)
            checker.NamespacesMustBeReady(BASE_NAMESPACES)
        except CheckFailed as exc:
            self.report.setup_problem = str(exc)
            self.out(f"setup: {exc}")

    def _run_test(self, t: TestCase, world: World, checker: StatusChecker,
                  replayer: Replayer) -> TestResult:
        started = time.monotonic()
        dead = self._kgw_exit()
        if dead:
            return self._done(t, FAILED, dead, "kgw", started)
        docs = [d for m in t.manifests for d in read_manifest(m)]
        try:
            world.apply(t.name, docs)
        except (RuntimeError, OSError) as exc:
            world.remove(t.name)
            return self._done(t, FAILED, f"could not set up the test's backends: {exc}", "setup",
                              started)
        run = TestRun(t, world, checker, replayer, t.name, log=self.log)
        try:
            scenario_for(t)(run)
            outcome, reason, step = PASSED, "", ""
        except StepFailed as exc:
            outcome, reason, step = FAILED, str(exc), exc.step
        except HarnessGap as exc:
            outcome, reason, step = SKIPPED, f"harness: {exc}", ""
        except CheckFailed as exc:
            outcome, reason, step = FAILED, str(exc), ""
        except Exception as exc:  # a harness bug must not stop the run; it is reported
            outcome, reason, step = FAILED, f"harness error: {exc!r}", "harness"
            self.log(traceback.format_exc())
        if outcome == FAILED and (dead := self._kgw_exit()):
            reason = f"{reason} [{dead}]"
        if outcome == PASSED and self.report.setup_problem:
            outcome, reason, step = (FAILED, f"suite setup failed: {self.report.setup_problem}",
                                     "setup")
        self._cleanup(t, world, checker)
        return self._done(t, outcome, reason, step, started)

    def _cleanup(self, t: TestCase, world: World, checker: StatusChecker) -> None:
        keys = world.status_keys(t.name)
        world.remove(t.name)
        deadline = time.monotonic() + CLEANUP_TIMEOUT_S
        while keys and not self._kgw_exit():
            try:
                left = keys & set(checker.admin.statuses())
            except (OSError, ValueError):
                left = keys
            if not left:
                return
            if time.monotonic() > deadline:
                self.out(f"  warning: {t.name}: kgw still reports status for {sorted(left)} "
                         f"{CLEANUP_TIMEOUT_S:.0f}s after its manifests were removed")
                return
            time.sleep(0.05)

    def _done(self, t: TestCase, outcome: str, reason: str, step: str,
              started: float) -> TestResult:
        secs = time.monotonic() - started
        label = {PASSED: "PASS", FAILED: "FAIL", SKIPPED: "SKIP"}[outcome]
        self.out(f"{label} {t.name} ({secs:.1f}s)" + (f": {reason}" if reason else ""))
        return TestResult(t.name, outcome, reason, step, secs, t.provisional)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
