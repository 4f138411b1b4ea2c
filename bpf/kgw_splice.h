/* kgw_splice.h — the splice program's maps and build features (bpf/sockmap.c).
 *
 * The maps are keyed by socket cookie (sockmap.c says why) and not pinned: they hold
 * sockets of the process that loaded the program. Their names and layouts are part of
 * the ABI: kgw_l4/splice.py reaches them through kgw_l4.maps (Loader.table, by name),
 * and tests/l4/test_abi.py compares their key and value sizes with kgw_l4.loader's
 * splice_maps().
 *
 * The features are on only where the running kernel's BTF has the struct offsets they
 * read (kgw_l4/kernel_btf.py passes KGW_OFF_* and these as -D flags); a standalone build
 * has them off. */
#ifndef KGW_SPLICE_H
#define KGW_SPLICE_H

#include "kgw_consts.h"
#include "kgw_structs.h"

/* cookie -> socket. bcc's BPF_SOCKHASH declares no lookup(); this is the same
 * declaration with one (a bpf_map_lookup_elem that returns a referenced socket). */
struct kgw_sockhash_table_t {
	u64 key;
	int leaf;
	struct bpf_sock *(*lookup)(u64 *);
	int (*update)(u64 *, int *);
	int (*delete)(u64 *);
	int (*sk_redirect_hash)(void *, void *, u64);
	u32 max_entries;
};
__attribute__((section("maps/sockhash")))
struct kgw_sockhash_table_t kgw_sockhash = { .max_entries = KGW_SOCKHASH_SIZE };
BPF_ANNOTATE_KV_PAIR(kgw_sockhash, u64, int);

/* cookie -> peer and byte counts (kgw_structs.h) */
BPF_HASH(kgw_splice_peer, u64, struct kgw_splice_peer, KGW_SOCKHASH_SIZE);
/* cookie -> held bytes the agent has taken (read and written on): the direction is held
 * while kgw_splice_peer.passed is more */
BPF_HASH(kgw_splice_hold, u64, u64, KGW_SOCKHASH_SIZE);
/* struct kgw_splice_event: a direction became held, or a connection holds too much */
BPF_RINGBUF_OUTPUT(kgw_splice_evt, KGW_SPLICE_EVT_PAGES);

/* Pop the old head of a retransmission (needs KGW_OFF_SKB_SK, _SKB_CB, _TCB_SEQ,
 * _TP_COPIED_SEQ). */
#ifndef KGW_SPLICE_TRIM
#define KGW_SPLICE_TRIM 0
#endif
/* Hold a direction whose peer's psock queue is long (needs the above and
 * KGW_OFF_SK_USER_DATA, _PSOCK_INGRESS_SKB, _SKB_HEAD_QLEN). */
#ifndef KGW_SPLICE_BACKPRESSURE
#define KGW_SPLICE_BACKPRESSURE 0
#endif

/* sk_user_data of a socket in a sockmap: the psock pointer with flags in its low bits
 * (include/net/sock.h: SK_USER_DATA_PSOCK, SK_USER_DATA_PTRMASK). */
#define KGW_SK_USER_DATA_PSOCK 4UL
#define KGW_SK_USER_DATA_PTRMASK (~7UL)

/* The most bpf_skb_adjust_room moves in one call on an SK_SKB program (0xfff). */
#define KGW_ADJUST_ROOM_MAX 4095

#endif
