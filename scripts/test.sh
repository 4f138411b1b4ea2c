#!/usr/bin/env bash
# The whole test suite: lint and types, unit and integration tests, then the kernel tests
# where this machine can run them (root, bcc, kernel headers); they skip themselves with a
# reason otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
# ruff and mypy as configured in pyproject.toml; the tests still run, the verdict is kept.
lint=0
.venv/bin/ruff check --quiet || lint=1
.venv/bin/mypy || lint=1
[ $lint -eq 0 ] || rc=1
.venv/bin/python -m pytest -q -p no:cacheprovider tests || rc=$?
# The L7 modules run compiled when scripts/build_ext.py could build them: their tests run
# once more interpreted, so both forms of the same source stay correct.
if .venv/bin/python -c "import kgw_l7, sys; sys.exit(0 if kgw_l7.build_is_fresh() else 1)"; then
  echo "test: tests/l7 again with the interpreted kgw_l7 (KGW_NO_EXTENSIONS=1)"
  KGW_NO_EXTENSIONS=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/l7 || rc=$?
fi
if [ -d vm_tests ] && ls vm_tests/test_*.py >/dev/null 2>&1; then
  .venv/bin/python -m pytest -q -p no:cacheprovider vm_tests || { r=$?; [ $r -eq 5 ] || rc=$r; }
fi
[ $lint -eq 0 ] || echo "test: FAILED: ruff or mypy found problems (printed first)" >&2
exit $rc
