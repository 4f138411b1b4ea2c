# The kgw agent image (`kgw agent`, run by deploy/ as a DaemonSet).
#
# bcc is not on PyPI: it comes from Debian (python3-bpfcc, built for bookworm's Python
# 3.11), so the venv sees the system site-packages. bcc compiles the BPF programs at
# start-up against the node's kernel headers, mounted from the host (/usr/src,
# /lib/modules); nothing kernel-specific is baked in. kgw_l4 finds its C sources next to
# the package (bpf/), hence the editable install of the source tree.
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-bpfcc ca-certificates \
    libnghttp2-14 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/kgw
COPY pyproject.toml README.md ./
COPY bpf/ bpf/
COPY controller/ controller/
COPY kgw_l4/ kgw_l4/
COPY kgw_l7/ kgw_l7/
RUN python3 -m venv --system-site-packages /opt/kgw/venv \
 && /opt/kgw/venv/bin/pip install --no-cache-dir -e /opt/kgw \
 && /opt/kgw/venv/bin/python -c "import bcc, kubernetes, controller.commands.agent"
# The L7 hot path and TLS passthrough's pair relay (kgw_l4/_pairrelay.pyx) compiled with Cython (README "HTTP traffic"); the compiler and Cython
# leave the image again (libnghttp2 stays: kgw_l7._nghttp2 links it). Without them
# kgw_l7 would run the same modules interpreted.
COPY scripts/build_ext.py scripts/
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc python3-dev libnghttp2-dev \
 && /opt/kgw/venv/bin/pip install --no-cache-dir 'Cython>=3.0,<3.2' \
 && /opt/kgw/venv/bin/python scripts/build_ext.py \
 && /opt/kgw/venv/bin/python -c "import kgw_l7, sys; sys.exit(not kgw_l7.build_is_fresh())" \
 && /opt/kgw/venv/bin/python -c "import kgw_l4.pairrelay as p, sys; sys.exit(p.native() is None)" \
 && /opt/kgw/venv/bin/pip uninstall -y Cython \
 && apt-get purge -y gcc python3-dev libnghttp2-dev && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/* build kgw_l7/*.c kgw_l4/*.c

ENV PATH=/opt/kgw/venv/bin:$PATH PYTHONUNBUFFERED=1
ENTRYPOINT ["kgw"]
CMD ["agent"]
