"""The run's outcome, shaped like upstream's ConformanceReport (apis/v1 ConformanceReport).

Per profile, core and extended each carry a result, statistics (Passed/Failed/Skipped)
and the failed and skipped test names; kgw adds ``failures`` (each failed test's first
failing case and why) and ``skipReasons``, so a report alone says what to fix.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from conformance.features import PROFILE_CORE_FEATURES, SUPPORTED_FEATURES

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


@dataclass(frozen=True)
class TestResult:
    __test__ = False  # not a pytest test class

    name: str
    outcome: str  # PASSED | FAILED | SKIPPED
    reason: str = ""  # why it failed (first failing step) or was skipped
    case: str = ""  # the first failing case or check
    seconds: float = 0.0
    provisional: bool = False


@dataclass
class Report:
    results: dict[str, TestResult] = field(default_factory=dict)
    # profile -> level -> tests
    profiles: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    features: dict[str, tuple[str, ...]] = field(default_factory=dict)  # test -> features
    supported: frozenset[str] = SUPPORTED_FEATURES
    api_version: str = "v1.6.1"
    channel: str = "experimental"
    setup_problem: str = ""

    def add_test(self, name: str, profiles: dict[str, str], features: Iterable[str]) -> None:
        self.features[name] = tuple(features)
        for profile, level in profiles.items():
            self.profiles.setdefault(profile, {"core": [], "extended": []}).setdefault(
                level, []).append(name)

    def record(self, result: TestResult) -> None:
        self.results[result.name] = result

    def profile_supported(self, profile: str) -> bool:
        return PROFILE_CORE_FEATURES.get(profile, frozenset()) <= self.supported

    def counts(self, profile: str, level: str) -> tuple[int, int, int, int]:
        """(passed, failed, skipped, total) for one profile level; every test of a
        profile kgw does not support counts as skipped there (even the generic Gateway
        tests that ran for another profile)."""
        names = self.profiles.get(profile, {}).get(level, [])
        outs = [self._outcome(n, profile) for n in names]
        return outs.count(PASSED), outs.count(FAILED), outs.count(SKIPPED), len(names)

    def summary_lines(self, profiles: Iterable[str]) -> list[str]:
        lines = []
        for p in profiles:
            cp, cf, _, ct = self.counts(p, "core")
            ep, ef, _, et = self.counts(p, "extended")
            note = "" if self.profile_supported(p) else " (profile not supported: skipped)"
            lines.append(f"{p} core {cp}/{ct} extended {ep}/{et}{note}"
                         + (f"  [failed: core {cf}, extended {ef}]" if cf or ef else ""))
        return lines

    def _level(self, profile: str, level: str) -> dict[str, Any]:
        names = self.profiles.get(profile, {}).get(level, [])
        passed, failed, skipped, total = self.counts(profile, level)
        if total == 0 or skipped == total:
            result = "skipped"
        elif failed:
            result = "failure"
        elif skipped:
            result = "partial"
        else:
            result = "success"
        out: dict[str, Any] = {"result": result,
                               "statistics": {"Passed": passed, "Failed": failed,
                                              "Skipped": skipped}}
        if level == "extended":
            feats = sorted({f for n in names for f in self.features.get(
                n, ())} - PROFILE_CORE_FEATURES.get(profile, set()))
            out["supportedFeatures"] = [f for f in feats if f in self.supported]
            out["unsupportedFeatures"] = [f for f in feats if f not in self.supported]
        failed_names = sorted(n for n in names if self._outcome(n, profile) == FAILED)
        skipped_names = sorted(n for n in names if self._outcome(n, profile) == SKIPPED)
        if failed_names:
            out["failedTests"] = failed_names
            out["failures"] = [{"test": n, "case": self.results[n].case,
                                "message": self.results[n].reason}
                               for n in failed_names]
        if skipped_names:
            out["skippedTests"] = skipped_names
            out["skipReasons"] = {n: self._skip_reason(n, profile) for n in skipped_names}
        return out

    def _outcome(self, name: str, profile: str) -> str:
        if not self.profile_supported(profile):
            return SKIPPED
        return self.results[name].outcome if name in self.results else SKIPPED

    def _skip_reason(self, name: str, profile: str) -> str:
        if not self.profile_supported(profile):
            missing = sorted(PROFILE_CORE_FEATURES[profile] - self.supported)
            return f"profile not supported (core features not claimed: {', '.join(missing)})"
        r = self.results.get(name)
        return r.reason if r and r.outcome == SKIPPED else "not run"

    def to_dict(self, profiles: Iterable[str], *, version: str,
                date: str | None = None) -> dict[str, Any]:
        profs = []
        for p in profiles:
            core, ext = self._level(p, "core"), self._level(p, "extended")
            profs.append({"name": p, "core": core, "extended": ext,
                          "summary": f"Core tests {core['result']}; "
                                     f"extended tests {ext['result']}."})
        doc: dict[str, Any] = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "ConformanceReport",
            "date": date or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "gatewayAPIVersion": self.api_version,
            "gatewayAPIChannel": self.channel,
            "implementation": {"organization": "kgw", "project": "kgw", "url": "https://kgw.dev",
                               "version": version, "contact": []},
            "mode": "standalone",
            "profiles": profs,
            "succeededProvisionalTests": sorted(n for n, r in self.results.items()
                                                if r.provisional and r.outcome == PASSED),
        }
        if self.setup_problem:
            doc["setupProblem"] = self.setup_problem
        return doc

    def to_yaml(self, profiles: Iterable[str], *, version: str, date: str | None = None) -> str:
        return yaml.safe_dump(self.to_dict(profiles, version=version, date=date), sort_keys=False,
                              width=200)
