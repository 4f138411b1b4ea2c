#!/usr/bin/env bash
# Install what kgw needs on a Debian/Ubuntu machine, as root, idempotently.
#   scripts/setup.sh            the runtime and test dependencies
#   scripts/setup.sh bench      also the peers the benchmarks compare against
# The second run is quick: apt runs only when a package is missing, pip only when
# pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: the scraper tests/test_observability.py runs against kgw (not a runtime need)
# redis-server: the global rate limit's tests start their own (kgw_l7/globallimit.py)
# libnghttp2-dev: the C HPACK codec of the compiled HTTP/2 path (kgw_l7/_nghttp2.pyx)
want=(python3 python3-venv python3-pip python3-bpfcc bpfcc-tools bpftool iproute2 curl
      ethtool kmod gcc python3-dev libnghttp2-dev prometheus redis-server)
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
want+=("linux-headers-$arch")
if [ "${1:-}" = bench ]; then want+=(nginx-light libnginx-mod-stream haproxy wrk iperf3 nghttp2-client); fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
  else
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Headers may not exist for every architecture/kernel; install the rest regardless.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || apt-get install -y -qq --no-install-recommends \
           $(printf '%s\n' "${missing[@]}" | grep -v '^linux-headers') >/dev/null
    # Debian starts the prometheus and redis services it installs (on *:9090, :6379): the
    # tests run their own, so a service this script brought in is stopped and left disabled.
    for svc in prometheus redis-server; do
      if printf '%s\n' "${missing[@]}" | grep -qx "$svc" && command -v systemctl >/dev/null; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

scripts/kernel-headers.sh || true

# A virtual environment on the distribution's Python, with its site-packages visible:
# that is where bcc (python3-bpfcc) lives.
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $py"
  "$py" -m venv --system-site-packages .venv
fi
stamp=.venv/.kgw-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test,lint,speedups]'
  # xds-protos (the ext_authz protos) ships its own, older copy of the
  # opentelemetry/proto modules over opentelemetry-proto's (the OTLP exporters then fail to
  # import): put opentelemetry-proto's own files back, whichever was installed last.
  otel_proto=$(.venv/bin/pip show opentelemetry-proto 2>/dev/null | awk '/^Version:/ {print $2}')
  if [ -n "$otel_proto" ]; then
    .venv/bin/pip install -q --force-reinstall --no-deps "opentelemetry-proto==$otel_proto"
  fi
  touch "$stamp"
fi

# The L7 hot path compiled with Cython from its .py sources (optional: without a
# compiler kgw runs the same modules interpreted). Rebuilds only what changed.
.venv/bin/python scripts/build_ext.py
