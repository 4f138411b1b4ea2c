"""The C headers and kgw_l4.abi agree: sizes, offsets, counter indexes, flags, the flow
hash (compiled from bpf/hash.h with gcc, with the loader's -D flags), every map's type,
key, value and capacity (the map declarations of bpf/kgw_maps.h and bpf/kgw_splice.h,
compiled with stand-ins for bcc's macros), and abi's key and value encoders."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from kgw_l4 import abi, loader, maglev
from kgw_l4.csource import BPF_DIR
from kgw_l4.maps import MAP_ARRAY, MAP_HASH, MAP_LRU_HASH, MAP_PERCPU_ARRAY, MAP_SOCKHASH

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
    for m in ("KGW_CT_F_REPLY", "KGW_CT_F_FIN", "KGW_CT_F_RST", "KGW_CT_F_SYN_TBL",
              "KGW_CT_F_EMBRYO",
              "KGW_NO_BACKEND", "KGW_HASH_SEED", "KGW_GLOBAL_BASE", "KGW_STATS_SIZE",
              "KGW_FE_BASE", "KGW_BACKEND_BASE", "KGW_FE_FLOWS_BASE", "KGW_BE_FLOWS_BASE",
              "KGW_FE_DROPS_BASE", "KGW_FE_DROP_FIRST", "KGW_FE_DROP_COUNT",
              "KGW_DIR_TO_BACKEND", "KGW_DIR_TO_CLIENT",
              "KGW_SPLICE_F_SEQ", "KGW_SPLICE_F_OVERFLOW", "KGW_SPLICE_EVT_HOLD",
              "KGW_SPLICE_EVT_OVERFLOW", "KGW_SETTINGS_F_XDP", *abi.SIZES):
        lines.append(f'printf("macro {m} %llu\\n", (unsigned long long)({m}));')
    for i, (s, sp, d, dp, p) in enumerate(FLOWS):
        lines.append(f'{{ struct kgw_flow_key k = {{0}}; k.saddr = inet_addr("{s}"); '
                     f'k.daddr = inet_addr("{d}"); k.sport = htons({sp}); k.dport = htons({dp}); '
                     f'k.proto = {p}; printf("hash {i} %u\\n", kgw_flow_hash(&k)); }}')
    lines += ['return 0;', '}']
    return "\n".join(lines)


def _run(d: Path, name: str, text: str) -> str:
    src, exe = d / f"{name}.c", d / name
    src.write_text(text)
    r = subprocess.run(["gcc", "-O0", f"-I{BPF_DIR}", *abi.cflags(), "-o", str(exe), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def c_facts(tmp_path_factory) -> dict[str, int]:
    out = _run(tmp_path_factory.mktemp("abi"), "abi", _program())
    facts = {}
    for line in out.splitlines():
        kind, name, value = line.split()
        facts[f"{kind} {name}"] = int(value)
    return facts


#: every map kgw's programs declare: the pinned ones, and the splice program's
ALL_MAPS = {**loader.expected_maps(), **loader.splice_maps()}
MAP_TYPES = {"hash": MAP_HASH, "array": MAP_ARRAY, "lru_hash": MAP_LRU_HASH,
             "percpu_array": MAP_PERCPU_ARRAY, "sockhash": MAP_SOCKHASH}


def _maps_program() -> str:
    """The map declarations, with bcc's macros replaced by functions that print each
    map's type, key size, value size and capacity."""
    fact = ('static void name##_facts(void) {{ printf("%s %s %zu %zu %llu\\n", #name, {type}, '
            'sizeof(k), sizeof(v), (unsigned long long)(n)); }}')
    lines = ['#include <stdio.h>', '#include <linux/types.h>',
             'typedef __u64 u64;', 'typedef __u32 u32;', 'struct bpf_sock;',
             '#define BPF_TABLE_PINNED(type, k, v, name, n, pin) ' + fact.format(type="type"),
             '#define BPF_HASH(name, k, v, n) ' + fact.format(type='"hash"'),
             '#define BPF_ANNOTATE_KV_PAIR(name, k, v) static const int name##_annotated = 1',
             '#define BPF_RINGBUF_OUTPUT(name, pages) static const int name##_pages = (pages)',
             '#include "kgw_maps.h"', '#include "kgw_splice.h"', 'int main(void) {',
             'printf("kgw_sockhash \\"sockhash\\" %zu %zu %u\\n", sizeof(kgw_sockhash.key), '
             'sizeof(kgw_sockhash.leaf), kgw_sockhash.max_entries);']
    lines += [f"{name}_facts();" for name in ALL_MAPS if name != "kgw_sockhash"]
    lines += ['return 0;', '}']
    return "\n".join(lines)


@pytest.fixture(scope="module")
def c_maps(tmp_path_factory) -> dict[str, tuple[int, int, int, int]]:
    out = _run(tmp_path_factory.mktemp("abi"), "maps", _maps_program())
    maps = {}
    for line in out.splitlines():
        name, type_, key, value, n = line.split()
        maps[name] = (MAP_TYPES[type_.strip('"')], int(key), int(value), int(n))
    return maps


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
    assert c_facts["macro KGW_SETTINGS_F_XDP"] == abi.SETTINGS_F_XDP
    assert c_facts["macro KGW_NO_BACKEND"] == abi.NO_BACKEND
    assert c_facts["macro KGW_HASH_SEED"] == maglev.HASH_SEED
    assert c_facts["macro KGW_GLOBAL_BASE"] == abi.global_base()
    assert c_facts["macro KGW_STATS_SIZE"] == abi.stats_size()
    lay = abi.StatsLayout()
    for macro, value in (("FE_BASE", lay.fe_base), ("BACKEND_BASE", lay.backend_base),
                         ("FE_FLOWS_BASE", lay.fe_flows_base), ("BE_FLOWS_BASE", lay.be_flows_base),
                         ("FE_DROPS_BASE", lay.fe_drops_base), ("GLOBAL_BASE", lay.global_base),
                         ("STATS_SIZE", lay.size), ("FE_DROP_FIRST", abi.FE_DROPS[0].value),
                         ("FE_DROP_COUNT", len(abi.FE_DROPS)),
                         ("DIR_TO_BACKEND", abi.Direction.TO_BACKEND),
                         ("DIR_TO_CLIENT", abi.Direction.TO_CLIENT)):
        assert c_facts[f"macro KGW_{macro}"] == value, macro
    # the reply flag is the direction bit (stats.h, kgw_ct_dir)
    assert abi.CT_F_REPLY == abi.Direction.TO_CLIENT
    for m in ("SPLICE_F_SEQ", "SPLICE_F_OVERFLOW", "SPLICE_EVT_HOLD", "SPLICE_EVT_OVERFLOW"):
        assert c_facts[f"macro KGW_{m}"] == getattr(abi, m), m
    for k, v in abi.SIZES.items():
        assert c_facts[f"macro {k}"] == v, k


def test_flow_hash_matches_c(c_facts):
    for i, flow in enumerate(FLOWS):
        assert maglev.flow_hash(*flow) == c_facts[f"hash {i}"], flow


def test_every_map_is_declared_as_the_loader_expects(c_maps):
    assert c_maps == {name: (i.map_type, i.key_size, i.value_size, i.max_entries)
                      for name, i in ALL_MAPS.items()}


def test_encoders_make_keys_and_values_of_the_maps_sizes():
    made = {
        "kgw_frontends": (abi.fe_key("10.0.0.1", 80, "TCP"), abi.fe_val(3)),
        "kgw_backends": (abi.u32(7), abi.backend_val("10.1.0.1", 80, "10.9.0.1")),
        "kgw_maglev": (abi.u32(abi.maglev_index(1, 5, 16381)), abi.u32(abi.NO_BACKEND)),
        "kgw_ct": (abi.flow_key("10.5.0.1", 40000, "10.0.0.1", 80, 6), bytes(abi.CtEntry())),
        "kgw_ct_syn": (abi.flow_key("10.5.0.1", 40000, "10.0.0.1", 80, 6), bytes(abi.CtEntry())),
        "kgw_local_addrs": (abi.local_addr_key("10.0.0.1"), abi.LOCAL_ADDR_PRESENT),
        "kgw_settings": (abi.SETTINGS_KEY, bytes(abi.Settings())),
        "kgw_syn_limits": (abi.syn_limit_key("0.0.0.0", 80), abi.syn_limit_val(10, 20, 1)),
        "kgw_syn_sources": (bytes(abi.SynSrcKey()), bytes(abi.SynSrc())),
        "kgw_stats": (abi.u32(abi.global_base()), bytes(abi.CounterVal())),
        "kgw_fib_cache": (abi.u32(0), bytes(abi.FibEntry())),
        "kgw_sockhash": (abi.u64(2**64 - 1), abi.sockhash_val(5)),
        "kgw_splice_peer": (abi.u64(1), abi.splice_peer_val(2)),
        "kgw_splice_hold": (abi.u64(1), abi.u64(1500)),
    }
    assert made.keys() == ALL_MAPS.keys()
    for name, (key, value) in made.items():
        assert (len(key), len(value)) == (ALL_MAPS[name].key_size, ALL_MAPS[name].value_size), name


def test_decoders_undo_the_encoders():
    assert abi.syn_limit_of(abi.syn_limit_key("10.0.0.1", 443), abi.syn_limit_val(20, 5, 3)) == \
        ("10.0.0.1", 443, 20.0, 5, 3)
    assert abi.fe_entry(abi.fe_key("10.0.0.1", 8080, "UDP"), abi.fe_val(3)) == \
        ("10.0.0.1", 8080, "UDP", 3)
    assert abi.fe_entry(bytes(abi.FeKey(proto=132)), abi.fe_val(0))[2] == "132"
    assert abi.fe_key("10.0.0.1", 1, "SCTP") == abi.fe_key("10.0.0.1", 1, "?")  # proto 0
    assert abi.backend_of(abi.backend_val("10.1.0.1", 80, "10.9.0.1")) == ("10.1.0.1", 80,
                                                                           "10.9.0.1")
    table = (abi.backend_val("10.1.0.1", 80, "10.9.0.1") + bytes(12)
             + abi.backend_val("10.1.0.3", 81, "0.0.0.0"))
    assert {bid: abi.backend_of(v) for bid, v in abi.backends_of(table).items()} == \
        {0: ("10.1.0.1", 80, "10.9.0.1"), 2: ("10.1.0.3", 81, "0.0.0.0")}
    assert abi.u32s_of(abi.u32s([1, abi.NO_BACKEND, 0])) == [1, abi.NO_BACKEND, 0]
    assert abi.u32_of(abi.u32(7)) == 7 and abi.u64_of(abi.u64(2**40)) == 2**40
    assert abi.maglev_index(2, 5, 16381) == 2 * 16381 + 5
    assert abi.local_addr_of(abi.local_addr_key("10.1.2.3")) == "10.1.2.3"
    # a __be32 key is the address's own bytes, as the packet carries it
    assert abi.local_addr_key("10.1.2.3") == bytes([10, 1, 2, 3])
    assert abi.counter_total([bytes(abi.CounterVal(2, 100)), bytes(abi.CounterVal(3, 50))]) == (5,
                                                                                                150)
    assert abi.SplicePeer.from_buffer_copy(abi.splice_peer_val(9)).peer == 9


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
