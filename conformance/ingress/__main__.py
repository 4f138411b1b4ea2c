"""``python -m conformance.ingress --suite DIR``: the upstream Ingress features against a
standalone kgw, then the scenarios passed per feature (exit 1 when any failed)."""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


class PerFeature:
    """A pytest plugin counting pytest-bdd scenarios (outline examples each) per feature."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.failed: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        feature = getattr(report, "scenario", {}).get("feature", {}).get("name")
        if feature is None:
            return
        if report.when == "call" or (report.when == "setup" and not report.passed):
            c = self.counts[feature]
            c[1] += 1
            if report.passed:
                c[0] += 1
            else:
                self.failed.append(report.nodeid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conformance.ingress")
    p.add_argument("--suite", default="../shared/ingress-conformance",
                   help="the suite kept as data (a directory with features/)")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest (e.g. -k wildcard)")
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
    print("\nIngress conformance: scenarios passed per feature")
    total = [0, 0]
    for feature in sorted(plugin.counts):
        ok, n = plugin.counts[feature]
        total[0] += ok
        total[1] += n
        print(f"  {feature:<20} {ok}/{n}")
    print(f"  {'all':<20} {total[0]}/{total[1]}")
    return 0 if rc == 0 and total[1] and total[0] == total[1] else 1


if __name__ == "__main__":
    sys.exit(main())
