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

ENV PATH=/opt/kgw/venv/bin:$PATH PYTHONUNBUFFERED=1
ENTRYPOINT ["kgw"]
CMD ["agent"]
