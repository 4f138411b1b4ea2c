"""The C headers and kgw_l4.abi agree: sizes, offsets, counter indexes, flags, and the
flow hash (compiled from bpf/hash.h with gcc, with the loader's -D flags)."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from kgw_l4 import abi, maglev
from kgw_l4.csource import BPF_DIR

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not Path("/usr/include/linux/types.h").exists(),
    reason="needs gcc and the kernel UAPI headers (linux-libc-dev)")

FLOWS = [("10.0.0.1", 40000, "10.0.0.2", 80, 6), ("192.168.1.200", 1, "172.16.0.9", 65535, 17),
         ("0.0.0.0", 0, "255.255.255.255", 443, 6)]


def _program() -> str:
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <arpa/inet.h>',
             '#define __always_inline inline', '#define bpf_ntohl ntohl', '#define bpf_ntohs ntohs',
             '#include "kgw_consts.h"', '#include "kgw_structs.h"', '#include "hash.h"',
             'int main(void) {']
    for cname, cls in abi.STRUCTS.items():
        lines.append(f'printf("size {cname} %zu\\n", sizeof(struct {cname}));')
        for f, *_ in cls._fields_:
            lines.append(f'printf("off {cname}.{f} %zu\\n", offsetof(struct {cname}, {f}));')
    for c in abi.Counter:
        lines.append(f'printf("counter {c.name} %d\\n", (int)KGW_C_{c.name});')
    lines.append('printf("counter COUNT %d\\n", (int)KGW_C_COUNT);')
    for m in ("KGW_CT_F_REPLY", "KGW_CT_F_FIN", "KGW_CT_F_RST", "KGW_CT_F_SYN_TBL", "KGW_CT_F_EMBRYO",
              "KGW_NO_BACKEND", "KGW_HASH_SEED", "KGW_GLOBAL_BASE", "KGW_STATS_SIZE",
              "KGW_SPLICE_F_SEQ", "KGW_SPLICE_F_OVERFLOW", "KGW_SPLICE_EVT_HOLD",
              "KGW_SPLICE_EVT_OVERFLOW", *abi.SIZES):
        lines.append(f'printf("macro {m} %llu\\n", (unsigned long long)({m}));')
    for i, (s, sp, d, dp, p) in enumerate(FLOWS):
        lines.append(f'{{ struct kgw_flow_key k = {{0}}; k.saddr = inet_addr("{s}"); '
                     f'k.daddr = inet_addr("{d}"); k.sport = htons({sp}); k.dport = htons({dp}); '
                     f'k.proto = {p}; printf("hash {i} %u\\n", kgw_flow_hash(&k)); }}')
    lines += ['return 0;', '}']
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory) -> dict[str, int]:
    d = tmp_path_factory.mktemp("abi")
    src, exe = d / "abi.c", d / "abi"
    src.write_text(_program())
    subprocess.run(["gcc", "-O0", f"-I{BPF_DIR}", *abi.cflags(), "-o", str(exe), str(src)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    facts = {}
    for line in out.splitlines():
        kind, name, value = line.split()
        facts[f"{kind} {name}"] = int(value)
    return facts


def test_struct_sizes_and_offsets(c_facts):
    for cname, cls in abi.STRUCTS.items():
        assert ctypes.sizeof(cls) == c_facts[f"size {cname}"], cname
        for f, *_ in cls._fields_:
            assert getattr(cls, f).offset == c_facts[f"off {cname}.{f}"], f"{cname}.{f}"


def test_counters_and_macros(c_facts):
    for c in abi.Counter:
        assert c_facts[f"counter {c.name}"] == c.value, c.name
    assert c_facts["counter COUNT"] == abi.COUNTER_COUNT
    assert c_facts["macro KGW_CT_F_REPLY"] == abi.CT_F_REPLY
    assert c_facts["macro KGW_CT_F_FIN"] == abi.CT_F_FIN
    assert c_facts["macro KGW_CT_F_RST"] == abi.CT_F_RST
    assert c_facts["macro KGW_CT_F_SYN_TBL"] == abi.CT_F_SYN_TBL
    assert c_facts["macro KGW_CT_F_EMBRYO"] == abi.CT_F_EMBRYO
    assert c_facts["macro KGW_NO_BACKEND"] == abi.NO_BACKEND
    assert c_facts["macro KGW_HASH_SEED"] == maglev.HASH_SEED
    assert c_facts["macro KGW_GLOBAL_BASE"] == abi.global_base()
    assert c_facts["macro KGW_STATS_SIZE"] == abi.stats_size()
    for m in ("SPLICE_F_SEQ", "SPLICE_F_OVERFLOW", "SPLICE_EVT_HOLD", "SPLICE_EVT_OVERFLOW"):
        assert c_facts[f"macro KGW_{m}"] == getattr(abi, m), m
    for k, v in abi.SIZES.items():
        assert c_facts[f"macro {k}"] == v, k


def test_flow_hash_matches_c(c_facts):
    for i, flow in enumerate(FLOWS):
        assert maglev.flow_hash(*flow) == c_facts[f"hash {i}"], flow


def test_address_helpers_round_trip():
    assert abi.ip_str(abi.ip_be("10.1.2.3")) == "10.1.2.3"
    assert bytes(abi.FeKey(addr=abi.ip_be("10.1.2.3"), port=abi.port_be(80)))[:6] == \
        bytes([10, 1, 2, 3, 0, 80])


def test_headers_expand_once():
    from kgw_l4.csource import program_source

    text = program_source("lb_tc.c")
    assert text.count("struct kgw_fe_key {") == 1
    assert '#include "' not in text
    assert Path(BPF_DIR / "lb_tc.c").exists()
