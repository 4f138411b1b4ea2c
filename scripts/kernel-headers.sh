#!/usr/bin/env bash
# bcc compiles BPF programs against /lib/modules/$(uname -r)/build. Kernels without a
# headers package of their own (cloud and CI kernels, custom builds) lack that directory;
# pointing it at the distribution's newest installed headers tree works for kgw's
# programs, which use only stable UAPI definitions and BTF.
set -euo pipefail
mod=/lib/modules/$(uname -r)
if [ -e "$mod/build/include" ]; then exit 0; fi
tree=$(ls -d /usr/src/linux-headers-*-"$(dpkg --print-architecture 2>/dev/null || echo amd64)" 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$tree" ]; then
  echo "kernel-headers: no headers for $(uname -r) and no linux-headers-* package installed;" \
       "the kernel data plane will fall back to userspace" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "kernel-headers: $mod/build is missing; run as root to link it to $tree" >&2
  exit 1
fi
mkdir -p "$mod"
ln -sfn "$tree" "$mod/build"
ln -sfn "$tree" "$mod/source"
echo "kernel-headers: $mod/build was missing; linked it to $tree (kernel $(uname -r) has no headers package)"
