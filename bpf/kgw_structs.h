/* kgw_structs.h — the ABI shared with userspace (kgw_l4/abi.py mirrors it in ctypes;
 * tests/l4/test_abi.py checks every size and offset against this file).
 *
 * Byte order: fields typed __be32/__be16 hold IPv4 addresses and ports in network byte
 * order, exactly as on the wire. Every other field is host byte order. Padding is
 * explicit so that the layout is the same for clang (BPF) and gcc (the ABI test).
 */
#ifndef KGW_STRUCTS_H
#define KGW_STRUCTS_H

#include <linux/types.h>

/* Frontend key: (address, port, protocol). address 0 = every local address. */
struct kgw_fe_key {
	__be32 addr;
	__be16 port;
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

struct kgw_fe_val {
	__u32 fe_id; /* row of the Maglev table and per-frontend counter slot */
	__u32 flags; /* reserved, 0 */
};

/* Backend, indexed by backend_id in kgw_backends. addr 0 = unused slot. */
struct kgw_backend {
	__be32 addr;
	__be32 snat_addr; /* node address the backend sees flows coming from */
	__be16 port;
	__u16 flags; /* reserved, 0 */
};

/* Connection-table key: a 5-tuple as seen on the wire when the packet arrives. */
struct kgw_flow_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Connection-table value: the tuple to rewrite the packet to, plus bookkeeping.
 * Forward entry (client -> frontend) rewrites to (snat_addr:nat_port -> backend);
 * reply entry (backend -> snat_addr:nat_port) rewrites to (frontend -> client). */
struct kgw_ct_entry {
	__be32 new_saddr;
	__be32 new_daddr;
	__be16 new_sport;
	__be16 new_dport;
	__u32 fe_id;
	__u32 backend_id;
	__u32 flags; /* KGW_CT_F_* */
	__u64 created_ns;   /* bpf_ktime_get_coarse_ns() (CLOCK_MONOTONIC, tick resolution) */
	__u64 last_seen_ns; /* the same clock; written without atomics, see nat.h */
	__u64 packets;
	__u64 bytes;
};

/* Global settings, kgw_settings[0]; written by the loader. */
struct kgw_settings {
	__u64 ct_timeout_syn_ns;     /* embryonic entries */
	__u64 ct_timeout_est_ns;     /* established entries */
	__u64 ct_timeout_closing_ns; /* after FIN or RST in the entry's direction */
	__u16 nat_port_min;          /* SNAT port range, host order, inclusive */
	__u16 nat_port_max;
	__u32 flags;                 /* KGW_SETTINGS_F_* */
};

/* A new-connection rate limit on a listening port (kgw_syn_limits, keyed by struct
 * kgw_fe_key; address 0 = every local address), enforced per source address as a
 * GCRA token bucket (bpf/synlimit.h): a source may open `burst` connections at once and
 * one more every interval_ns after that. Userspace computes both from the configured
 * rate and burst, so the program never divides. */
struct kgw_syn_limit {
	__u64 interval_ns; /* 1e9 / connections per second */
	__u64 tolerance_ns; /* (burst - 1) * interval_ns: how far ahead a source may run */
	__u32 id;          /* the limit's number: part of the per-source key */
	__u32 pad;
};

/* kgw_syn_sources key: one source address under one limit. */
struct kgw_syn_src_key {
	__be32 saddr;
	__u32 limit_id;
};

/* kgw_syn_sources value: the source's theoretical arrival time (GCRA), on the coarse
 * clock; a SYN arriving more than tolerance_ns before it is dropped. */
struct kgw_syn_src {
	__u64 tat_ns;
};

/* One per-CPU counter slot (kgw_stats). */
struct kgw_counter_val {
	__u64 packets;
	__u64 bytes;
};

/* One slot of the per-CPU FIB cache (kgw_fib_cache): the result of a successful
 * bpf_fib_lookup for (saddr, daddr, iif), reused for KGW_FIB_CACHE_NS. Per-CPU, so
 * only the CPU that owns the slot reads or writes it: no torn reads. The slot index is
 * a hash of the inputs; the inputs are stored too and compared on every hit. */
struct kgw_fib_entry {
	__u64 stamp_ns; /* bpf_ktime_get_coarse_ns() of the lookup; 0 = empty slot */
	__be32 saddr;   /* lookup input: source address (after NAT) */
	__be32 daddr;   /* lookup input: destination address (after NAT) */
	__u32 iif;      /* lookup input: ingress ifindex */
	__u32 oif;      /* result: egress ifindex */
	__u16 mtu;      /* result: egress device MTU */
	__u8 smac[6];   /* result: egress device address */
	__u8 dmac[6];   /* result: next hop's address */
	__u8 pad[2];
};

/* One spliced socket, kgw_splice_peer[its cookie] (bpf/sockmap.c). The byte counts let
 * userspace take a direction over without reordering it (kgw_l4/splice.py,
 * "Backpressure"): everything redirected must be written out before it writes. */
struct kgw_splice_peer {
	__u64 peer;       /* the peer socket's cookie */
	__u64 redirected; /* bytes redirected to the peer */
	__u64 passed;     /* bytes held: passed to this socket's own queue for userspace */
	__u32 next_seq;   /* sequence number after the last byte the verdict handled */
	__u32 flags;      /* KGW_SPLICE_F_* */
};

/* A kgw_splice_evt record. */
struct kgw_splice_event {
	__u64 cookie; /* the socket's */
	__u32 kind;   /* KGW_SPLICE_EVT_* */
	__u32 pad;
};

#endif
