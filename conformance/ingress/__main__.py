"""``python -m conformance.ingress --suite DIR``: the upstream Ingress features against a
standalone kgw, then the scenarios passed per feature (exit 1 when any failed)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


class PerFeature:
    """Counts scenarios (each example of an outline) passed per feature: pytest-bdd's
    ``pytest_bdd_before_scenario`` hook names the feature of each test."""

    def __init__(self) -> None:
        self.feature: dict[str, str] = {}
        self.outcome: dict[str, bool] = {}

    def pytest_bdd_before_scenario(self, request: Any, feature: Any, scenario: Any) -> None:
        self.feature[request.node.nodeid] = feature.name

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or not report.passed:
            self.outcome[report.nodeid] = self.outcome.get(report.nodeid, True) and report.passed

    def counts(self) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = {}
        for nodeid, ok in self.outcome.items():
            c = out.setdefault(self.feature.get(nodeid, "(not started)"), [0, 0])
            c[0] += ok
            c[1] += 1
        return {k: (v[0], v[1]) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.ingress")
    p.add_argument("--suite", default="../shared/ingress-conformance",
                   help="the suite kept as data (a directory with features/)")
    p.add_argument("pytest_args", nargs="*",
                   help="passed to pytest (after --: -- -k wildcard)")
    args = p.parse_args(argv)
    if not (Path(args.suite) / "features").is_dir():
        print(f"no Ingress conformance suite in {args.suite} (a directory with features/)",
              file=sys.stderr)
        return 2
    os.environ["KGW_INGRESS_SUITE"] = str(Path(args.suite).resolve())
    plugin = PerFeature()
    rc = pytest.main(["-q", "-p", "no:cacheprovider",
                      "-W", "ignore::pytest.PytestUnknownMarkWarning",
                      str(HERE / "test_features.py"), *args.pytest_args], plugins=[plugin])
    counts = plugin.counts()
    print("\nIngress conformance: scenarios passed per feature")
    total = [0, 0]
    for feature in sorted(counts):
        ok, n = counts[feature]
        total[0] += ok
        total[1] += n
        print(f"  {feature:<20} {ok}/{n}")
    print(f"  {'all':<20} {total[0]}/{total[1]}")
    return 0 if rc == 0 and total[1] and total[0] == total[1] else 1


if __name__ == "__main__":
    sys.exit(main())
