"""Kernel struct offsets from a BTF dump (kgw_l4/kernel_btf.py), as bpftool prints it."""

from kgw_l4.kernel_btf import feature_cflags, offsets

# Shapes from real kernels: 6.1 keeps sk_buff.sk in an anonymous union (with
# ip_defrag_offset), 6.18 has it directly; '(anon)' members point to other types.
DUMP_61 = """\
[1] INT 'unsigned int' size=4 bits_offset=0 nr_bits=32 encoding=(none)
[10] STRUCT 'sk_buff' size=232 vlen=4
\t'(anon)' type_id=11 bits_offset=0
\t'(anon)' type_id=12 bits_offset=192
\t'cb' type_id=20 bits_offset=320
\t'len' type_id=1 bits_offset=896
[11] UNION '(anon)' size=24 vlen=2
\t'rbnode' type_id=30 bits_offset=0
\t'list' type_id=31 bits_offset=0
[12] UNION '(anon)' size=8 vlen=2
\t'sk' type_id=40 bits_offset=0
\t'ip_defrag_offset' type_id=41 bits_offset=0
[13] STRUCT 'tcp_skb_cb' size=48 vlen=2
\t'seq' type_id=1 bits_offset=0
\t'end_seq' type_id=1 bits_offset=32
[14] STRUCT 'tcp_sock' size=2200 vlen=3
\t'inet_conn' type_id=50 bits_offset=0
\t'(anon)' type_id=15 bits_offset=11264
\t'tcp_header_len' type_id=1 bits_offset=11520
[15] STRUCT '(anon)' size=16 vlen=2
\t'rcv_nxt' type_id=1 bits_offset=0
\t'copied_seq' type_id=1 bits_offset=32
"""

DUMP_618 = """\
[873] STRUCT 'sk_buff' size=224 vlen=3
\t'(anon)' type_id=2772 bits_offset=0
\t'sk' type_id=1457 bits_offset=192
\t'cb' type_id=1606 bits_offset=320
[900] STRUCT 'tcp_skb_cb' size=48 vlen=1
\t'seq' type_id=9 bits_offset=0
[901] STRUCT 'tcp_sock' size=2368 vlen=2
\t'inet_conn' type_id=50 bits_offset=0
\t'copied_seq' type_id=9 bits_offset=11712
"""

# the psock fields backpressure reads (6.18's offsets)
PSOCK_618 = """\
[950] STRUCT 'sock' size=776 vlen=2
\t'__sk_common' type_id=951 bits_offset=0
\t'sk_user_data' type_id=952 bits_offset=5248
[960] STRUCT 'sk_psock' size=600 vlen=3
\t'sk' type_id=961 bits_offset=0
\t'ingress_skb' type_id=962 bits_offset=2944
\t'ingress_msg' type_id=963 bits_offset=3136
[962] STRUCT 'sk_buff_head' size=24 vlen=3
\t'(anon)' type_id=964 bits_offset=0
\t'qlen' type_id=9 bits_offset=128
\t'lock' type_id=965 bits_offset=160
"""


def test_direct_members():
    assert offsets(DUMP_618) == {"KGW_OFF_SKB_SK": 24, "KGW_OFF_SKB_CB": 40,
                                 "KGW_OFF_TCB_SEQ": 0, "KGW_OFF_TP_COPIED_SEQ": 1464}
    assert offsets(DUMP_618 + PSOCK_618) == {
        "KGW_OFF_SKB_SK": 24, "KGW_OFF_SKB_CB": 40, "KGW_OFF_TCB_SEQ": 0,
        "KGW_OFF_TP_COPIED_SEQ": 1464, "KGW_OFF_SK_USER_DATA": 656,
        "KGW_OFF_PSOCK_INGRESS_SKB": 368, "KGW_OFF_SKB_HEAD_QLEN": 16}


def test_each_feature_needs_all_its_offsets():
    flags, warnings = feature_cflags(offsets(DUMP_618 + PSOCK_618))
    assert "-DKGW_SPLICE_TRIM=1" in flags and "-DKGW_SPLICE_BACKPRESSURE=1" in flags
    assert "-DKGW_OFF_PSOCK_INGRESS_SKB=368" in flags and warnings == []
    # no psock in this kernel's BTF: trimming stays, backpressure goes, one warning says so
    flags, warnings = feature_cflags(offsets(DUMP_618))
    assert "-DKGW_SPLICE_TRIM=1" in flags and "-DKGW_SPLICE_BACKPRESSURE=0" in flags
    assert len(warnings) == 1 and "sk_psock.ingress_skb" in warnings[0] \
        and "no backpressure" in warnings[0]
    flags, warnings = feature_cflags({})
    assert "-DKGW_SPLICE_TRIM=0" in flags and "-DKGW_SPLICE_BACKPRESSURE=0" in flags
    assert len(warnings) == 2


def test_members_inside_anonymous_unions_and_structs():
    assert offsets(DUMP_61) == {"KGW_OFF_SKB_SK": 24, "KGW_OFF_SKB_CB": 40,
                                "KGW_OFF_TCB_SEQ": 0, "KGW_OFF_TP_COPIED_SEQ": 1412}


def test_missing_struct_or_bitfield_is_left_out():
    dump = DUMP_618.replace("'copied_seq' type_id=9 bits_offset=11712",
                            "'copied_seq' type_id=9 bits_offset=11713 bitfield_size=3")
    got = offsets(dump.replace("STRUCT 'tcp_skb_cb'", "STRUCT 'other_cb'"))
    assert got == {"KGW_OFF_SKB_SK": 24, "KGW_OFF_SKB_CB": 40}
