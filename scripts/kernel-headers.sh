#!/usr/bin/env bash
# bcc compiles BPF programs against /lib/modules/$(uname -r)/build. Kernels without a
# headers package of their own (cloud and CI kernels, custom builds) lack that directory;
# pointing it at the distribution's newest installed headers tree works for kgw's
# programs, which use only stable UAPI definitions and BTF.
set -euo pipefail
mod=/lib/modules/$(uname -r)
if [ -e "$mod/build/include" ] && [ -e "$mod/source/include/linux/kconfig.h" ]; then exit 0; fi
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
# Debian splits the tree: the arch directory (generated headers, build) and -common
# (the sources, include/linux/kconfig.h among them). bcc compiles against "source".
common=$(ls -d "${tree%-*}-common" 2>/dev/null || true)
[ -n "$common" ] || common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
mkdir -p "$mod"
ln -sfn "$tree" "$mod/build"
ln -sfn "${common:-$tree}" "$mod/source"
echo "kernel-headers: $mod/build was missing; linked it to $tree (source: ${common:-$tree});" \
     "kernel $(uname -r) has no headers package of its own"
