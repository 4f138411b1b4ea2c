# The two commands a new user needs:  make demo   and   make test
PY := .venv/bin/python
SUITE ?= ../shared/conformance

.PHONY: setup demo test unit lint vm-test bench conformance ingress-conformance clean

setup:
	@scripts/setup.sh

demo: setup
	@$(PY) examples/demo.py

test: setup
	@scripts/test.sh

unit: setup
	@$(PY) -m pytest -q tests

# What make test checks first (configured in pyproject.toml).
lint: setup
	@.venv/bin/ruff check && .venv/bin/mypy

vm-test: setup
	@$(PY) -m pytest -q vm_tests

# The Gateway API conformance suite, replayed against a standalone kgw (see conformance/).
CONFORMANCE_ARGS ?= --isolate
conformance: setup
	@if [ ! -d "$(SUITE)/cases" ]; then \
	  echo "make conformance: no conformance suite in $(SUITE)." >&2; \
	  echo "  Pass the Gateway API suite kept as data (a directory with cases/ and manifests/):" >&2; \
	  echo "  make conformance SUITE=/path/to/conformance" >&2; exit 2; fi
	@$(PY) -m conformance --suite $(SUITE) $(CONFORMANCE_ARGS)

# The upstream Ingress conformance features, replayed against a standalone kgw
# (conformance/ingress/): scenarios passed per feature.
INGRESS_SUITE ?= ../shared/ingress-conformance
ingress-conformance: setup
	@$(PY) -m conformance.ingress --suite $(INGRESS_SUITE)

bench:
	@scripts/setup.sh bench
	@$(PY) -m bench.run_all

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
