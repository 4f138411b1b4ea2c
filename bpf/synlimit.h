/* synlimit.h — the per-source new-connection rate limit of a listening port, checked
 * on every TCP SYN (without ACK) before connection tracking, for any port of the node:
 * an L4 frontend's or a port an L7 or TLS listener serves in userspace. A SYN over the
 * limit is dropped here, so a flood from a few sources never reaches a socket's
 * accept queue, let alone a worker.
 *
 * The bucket is GCRA (the virtual-scheduling form of a token bucket): one u64 per
 * source, its theoretical arrival time `tat`. A SYN at `now` passes when tat - now <=
 * tolerance (the burst), and moves tat to max(tat, now) + interval; a source quiet for
 * (burst * interval) has its full burst again. The update is a compare-and-swap, so two
 * CPUs admitting SYNs of one source at once cannot both spend the same slot; the loser
 * retries once and is dropped when it loses again (a source that busy is flooding).
 *
 * A source seen for the first time (or evicted from the LRU by a flood from many
 * addresses) starts with a full bucket: the limit is per source, not a global cap.
 */
#ifndef KGW_SYNLIMIT_H
#define KGW_SYNLIMIT_H

#include "kgw_maps.h"

/* The limit for the SYN's destination: (address, port) exactly, else (0, port) when
 * the address is one of the node's. NULL: no limit. */
static __always_inline struct kgw_syn_limit *kgw_syn_limit_for(const struct kgw_flow_key *k)
{
	struct kgw_fe_key fk = {};
	fk.addr = k->daddr;
	fk.port = k->dport;
	fk.proto = IPPROTO_TCP;
	struct kgw_syn_limit *lim = kgw_syn_limits.lookup(&fk);
	if (lim)
		return lim;
	__be32 daddr = k->daddr;
	if (!kgw_local_addrs.lookup(&daddr))
		return NULL;
	fk.addr = 0;
	return kgw_syn_limits.lookup(&fk);
}

/* One GCRA step on a source's tat; 1 when the SYN conforms (tat moved), 0 when it is
 * over the limit, -1 when another CPU changed tat meanwhile. */
static __always_inline int kgw_syn_step(struct kgw_syn_src *src,
					const struct kgw_syn_limit *lim, __u64 now)
{
	__u64 tat = src->tat_ns;
	__u64 base = tat > now ? tat : now;
	if (base - now > lim->tolerance_ns)
		return 0;
	if (__sync_val_compare_and_swap(&src->tat_ns, tat, base + lim->interval_ns) != tat)
		return -1;
	return 1;
}

/* 1: let the SYN of flow k through; 0: drop it (counted by the caller). */
static __always_inline int kgw_syn_admit(const struct kgw_flow_key *k, __u64 now)
{
	struct kgw_syn_limit *lim = kgw_syn_limit_for(k);
	if (!lim)
		return 1;
	struct kgw_syn_src_key sk = {};
	sk.saddr = k->saddr;
	sk.limit_id = lim->id;
	struct kgw_syn_src *src = kgw_syn_sources.lookup(&sk);
	if (!src) {
		struct kgw_syn_src fresh = {};
		fresh.tat_ns = now + lim->interval_ns;
		if (kgw_syn_sources.insert(&sk, &fresh) == 0)
			return 1;
		/* Another CPU inserted it first: charge this SYN to that bucket. */
		src = kgw_syn_sources.lookup(&sk);
		if (!src)
			return 1;
	}
	int rc = kgw_syn_step(src, lim, now);
	if (rc < 0)
		rc = kgw_syn_step(src, lim, now);
	return rc > 0;
}

#endif
