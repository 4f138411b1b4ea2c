/* kgw_consts.h — sizes, flags and the counter index space.
 *
 * Every size is an #ifndef-guarded macro: the loader passes the values from one Python
 * dict (kgw_l4/abi.py, SIZES) as -D cflags, so C and Python never disagree. The
 * defaults here only matter for standalone builds (the ABI test compiles this header
 * with gcc and the same -D flags).
 *
 * Keep in sync: kgw_l4/abi.py (Counter enum and flags) — tests/l4/test_abi.py compiles
 * this header and fails if a value differs.
 */
#ifndef KGW_CONSTS_H
#define KGW_CONSTS_H

#ifndef KGW_MAX_FRONTENDS
#define KGW_MAX_FRONTENDS 64
#endif
#ifndef KGW_MAX_BACKENDS
#define KGW_MAX_BACKENDS 4096
#endif
/* Maglev table size per frontend: a prime, much larger than the backend count. */
#ifndef KGW_MAGLEV_SIZE
#define KGW_MAGLEV_SIZE 16381
#endif
/* Established flows: two entries each (forward and reply). */
#ifndef KGW_CT_SIZE
#define KGW_CT_SIZE 262144
#endif
/* Embryonic flows (SYN seen, handshake not finished) live in their own LRU so that a
 * SYN flood only evicts other embryonic entries, never an established flow. */
#ifndef KGW_CT_SYN_SIZE
#define KGW_CT_SYN_SIZE 65536
#endif
#ifndef KGW_MAX_LOCAL_ADDRS
#define KGW_MAX_LOCAL_ADDRS 256
#endif
#ifndef KGW_SOCKHASH_SIZE
#define KGW_SOCKHASH_SIZE 65536
#endif
/* Splice backpressure (bpf/sockmap.c): past this many skbs waiting on the destination's
 * psock queue to be written out, the verdict stops redirecting and holds the direction
 * for userspace. A GSO skb holds up to 64 KB, so 1024 bounds a direction's queue to
 * about 64 MB; a lower bound means more bytes copied by userspace when a sender
 * outruns its receiver (bench/results/l4.md). 0: off. */
#ifndef KGW_SPLICE_BACKLOG_MAX
#define KGW_SPLICE_BACKLOG_MAX 1024
#endif
/* A held skb can only queue, uncharged (the window stays open), behind bytes its
 * socket's psock still has to send the other way: when both directions are stuck (a
 * client that keeps sending and reads nothing). Past this many skbs there the
 * connection is reset (bpf/sockmap.c, kgw_hold). */
#ifndef KGW_SPLICE_OVERFLOW_MAX
#define KGW_SPLICE_OVERFLOW_MAX 4096
#endif
/* Ring buffer for splice events (kgw_splice_evt), in pages: one 16-byte record (plus
 * its 8-byte header) per direction that becomes held, so 16 pages hold ~2700 of them
 * between two reads by the agent; when full, KGW_C_SPLICE_EVENT_LOST counts. */
#ifndef KGW_SPLICE_EVT_PAGES
#define KGW_SPLICE_EVT_PAGES 16
#endif
/* struct kgw_splice_peer flags */
#define KGW_SPLICE_F_SEQ 1       /* next_seq is set */
#define KGW_SPLICE_F_OVERFLOW 2  /* userspace was told to reset the connection */
/* struct kgw_splice_event kinds */
#define KGW_SPLICE_EVT_HOLD 1      /* the verdict started holding the socket's direction */
#define KGW_SPLICE_EVT_OVERFLOW 2  /* both directions stuck past the limit: reset */
/* How many NAT ports a new flow tries before giving up (bounded loop). */
#ifndef KGW_NAT_PROBES
#define KGW_NAT_PROBES 8
#endif
/* Successive NAT ports a new flow tries are this far apart (mod the port range): a
 * prime, so that the KGW_NAT_PROBES ports are distinct for any range that is not a
 * multiple of it, and large, so that they leave the first port's neighbourhood (with
 * port preservation, where the client's next source ports land). */
#ifndef KGW_NAT_PROBE_STRIDE
#define KGW_NAT_PROBE_STRIDE 7919
#endif
/* A NAT port whose flow closed both ways is reused after this quiet time. */
#ifndef KGW_PORT_REUSE_NS
#define KGW_PORT_REUSE_NS 1000000000ULL
#endif
/* Per-CPU FIB cache slots (a power of two: the slot is hash & (size - 1)). */
#ifndef KGW_FIB_CACHE_SIZE
#define KGW_FIB_CACHE_SIZE 256
#endif
/* How long a cached FIB result is used before bpf_fib_lookup runs again: the bound on
 * how late a route or neighbour change reaches flows that keep sending. */
#ifndef KGW_FIB_CACHE_NS
#define KGW_FIB_CACHE_NS 100000000ULL
#endif
/* New-connection rate limits (listening ports with one, kgw_syn_limits) and the sources
 * they track (an LRU: a flood from many addresses evicts the oldest sources, each of
 * which starts again with a full bucket when it comes back). */
#ifndef KGW_MAX_SYN_LIMITS
#define KGW_MAX_SYN_LIMITS 64
#endif
#ifndef KGW_SYN_SOURCES
#define KGW_SYN_SOURCES 65536
#endif
#ifndef KGW_PIN_DIR
#define KGW_PIN_DIR "/sys/fs/bpf/kgw"
#endif

#define KGW_HASH_SEED 0x6b67770aU
/* Seed of the first NAT port's hash (nat.h, xored with the backend id): not the flow
 * hash's, so that the port does not follow the Maglev slot. */
#define KGW_NAT_PORT_SEED (KGW_HASH_SEED ^ 0x5a5a5a5aU)
/* AF_INET for bpf_fib_lookup (linux/socket.h is not a UAPI header). */
#define KGW_AF_INET 2
#define KGW_NO_BACKEND 0xffffffffU

/* kgw_settings.flags */
/* The XDP program is attached (with the TC one behind it): SYNs are rate-limited at
 * XDP only, so that one passed up to TC does not pay a second time. */
#define KGW_SETTINGS_F_XDP (1U << 0)

/* kgw_ct_entry.flags */
#define KGW_CT_F_REPLY   (1U << 0) /* entry for the backend -> client direction */
#define KGW_CT_F_FIN     (1U << 1) /* FIN seen in this entry's direction */
#define KGW_CT_F_RST     (1U << 2) /* RST seen in this entry's direction */
#define KGW_CT_F_SYN_TBL (1U << 3) /* entry lives in the embryonic table */
/* Handshake not finished, entry in kgw_ct: a fresh SYN reused the tuple of a closing
 * flow whose entries already held the same rewrite, and they were re-armed in place
 * (nat.h, kgw_ct_rearm) instead of being moved through kgw_ct_syn. */
#define KGW_CT_F_EMBRYO  (1U << 4)

/* Verdicts of the shared decision function (parse.h/nat.h return convention). */
#define KGW_ACT_PASS    0 /* not ours: hand to the stack unchanged */
#define KGW_ACT_DROP    1
#define KGW_ACT_REWRITE 2 /* rewrite with the filled kgw_rewrite and forward */

/* Counter index space (one per-CPU array, kgw_stats), after katran's: per-frontend and
 * per-backend slots first, the global counters last, each range named here.
 *   [KGW_FE_BASE, +2 * KGW_MAX_FRONTENDS)           per frontend and direction:
 *                                                   fe_id * 2 + KGW_DIR_*
 *   [KGW_BACKEND_BASE, +2 * KGW_MAX_BACKENDS)        per backend and direction
 *   [KGW_FE_FLOWS_BASE, +KGW_MAX_FRONTENDS)          new flows per frontend
 *   [KGW_BE_FLOWS_BASE, +KGW_MAX_BACKENDS)           new flows per backend
 *   [KGW_FE_DROPS_BASE, +KGW_MAX_FRONTENDS * KGW_FE_DROP_COUNT)
 *                                                   drops per frontend and reason:
 *                                                   fe_id * KGW_FE_DROP_COUNT +
 *                                                   (counter - KGW_FE_DROP_FIRST)
 *   [KGW_GLOBAL_BASE, +KGW_C_COUNT)                  global, named below
 * A direction slot counts the packets and bytes of its frontend's (backend's) flows
 * that way; a flow slot counts flows in `packets` (bytes 0). Userspace reads the ranges
 * at scrape time (kgw_l4/loader.py, stats) and zeroes an id's slots before reusing it
 * (kgw_l4/programmer.py). Sizing: 3 * (FE + BE) + 6 * FE + 27 slots of 16 bytes per CPU,
 * about 200 KB per CPU at the default sizes. */
#define KGW_DIR_TO_BACKEND 0 /* client -> frontend -> backend: entries without KGW_CT_F_REPLY */
#define KGW_DIR_TO_CLIENT 1  /* backend -> client: KGW_CT_F_REPLY entries */
#define KGW_FE_BASE 0
#define KGW_BACKEND_BASE (KGW_FE_BASE + 2 * KGW_MAX_FRONTENDS)
#define KGW_FE_FLOWS_BASE (KGW_BACKEND_BASE + 2 * KGW_MAX_BACKENDS)
#define KGW_BE_FLOWS_BASE (KGW_FE_FLOWS_BASE + KGW_MAX_FRONTENDS)
#define KGW_FE_DROPS_BASE (KGW_BE_FLOWS_BASE + KGW_MAX_BACKENDS)
/* The drop reasons counted per frontend: the global counters from KGW_C_DROP_NOT_SYN to
 * KGW_C_DROP_REWRITE, contiguous in enum kgw_counter (a malformed packet has no
 * frontend yet). */
#define KGW_FE_DROP_FIRST KGW_C_DROP_NOT_SYN
#define KGW_FE_DROP_COUNT (KGW_C_DROP_REWRITE - KGW_C_DROP_NOT_SYN + 1)
#define KGW_GLOBAL_BASE (KGW_FE_DROPS_BASE + KGW_MAX_FRONTENDS * KGW_FE_DROP_COUNT)

enum kgw_counter {
	KGW_C_NEW_FLOWS = 0,      /* flows that got a backend */
	KGW_C_CT_HIT,             /* packets matched an existing flow */
	KGW_C_CT_MISS,            /* packet for a frontend with no flow entry */
	KGW_C_CT_EXPIRED,         /* entry found but past its timeout */
	KGW_C_CT_PROMOTED,        /* embryonic flow became established */
	KGW_C_PASS_NOT_IPV4,
	KGW_C_PASS_FRAGMENT,      /* IPv4 fragments go to the stack untouched */
	KGW_C_IP_OPTIONS,         /* frontend packets carrying IP options (forwarded) */
	KGW_C_FIB_PASS,           /* FIB said "let the stack forward it" */
	KGW_C_DROP_MALFORMED,     /* truncated or invalid IPv4/TCP/UDP header */
	KGW_C_DROP_NOT_SYN,       /* TCP non-SYN first packet of an unknown flow */
	KGW_C_DROP_NO_BACKEND,    /* frontend has no backend with weight > 0 */
	KGW_C_DROP_NAT_EXHAUSTED, /* no free NAT port after KGW_NAT_PROBES tries */
	KGW_C_DROP_CT_INSERT,     /* connection table insert failed */
	KGW_C_DROP_FIB,           /* no route to the rewritten destination */
	KGW_C_DROP_REWRITE,       /* packet rewrite failed */
	KGW_C_FWD_TC,             /* packets rewritten and redirected by the TC program */
	KGW_C_FWD_XDP,            /* packets rewritten and redirected by the XDP program */
	KGW_C_SPLICE_REDIRECT,    /* sockmap: skbs redirected to the peer socket */
	KGW_C_SPLICE_PASS,        /* sockmap: skbs passed (FIN, no peer) */
	KGW_C_SPLICE_DROP,        /* sockmap: peer not in the sockhash, skb dropped (not held:
	                           * no holds built in, or the hold event lost) */
	KGW_C_SPLICE_TRIM,        /* sockmap: old (already delivered) head bytes popped */
	KGW_C_SPLICE_TRIM_FAIL,   /* sockmap: old head bytes that could not be popped */
	KGW_C_SPLICE_HOLD,        /* sockmap: skbs held for userspace (backpressure, order) */
	KGW_C_SPLICE_EVENT_LOST,  /* sockmap: hold events the ring buffer had no room for */
	KGW_C_SPLICE_OVERFLOW,    /* sockmap: skbs dropped on a connection stuck both ways */
	KGW_C_DROP_SYN_RATE,      /* SYNs over a listening port's per-source rate limit */
	KGW_C_COUNT
};

#define KGW_STATS_SIZE (KGW_GLOBAL_BASE + KGW_C_COUNT)

#endif
