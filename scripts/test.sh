#!/usr/bin/env bash
# The whole test suite: unit and integration tests, then the kernel tests where this
# machine can run them (root, bcc, kernel headers); they skip themselves with a reason
# otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
.venv/bin/python -m pytest -q -p no:cacheprovider tests || rc=$?
if [ -d vm_tests ] && ls vm_tests/test_*.py >/dev/null 2>&1; then
  .venv/bin/python -m pytest -q -p no:cacheprovider vm_tests || { r=$?; [ $r -eq 5 ] || rc=$r; }
fi
exit $rc
