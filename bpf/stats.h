/* stats.h — per-CPU counters in the index space of kgw_consts.h. Per-CPU slots need no
 * atomics; userspace sums the CPUs (kgw_l4/loader.py, one accessor per counter). */
#ifndef KGW_STATS_H
#define KGW_STATS_H

#include "kgw_maps.h"

static __always_inline void kgw_count_slot(u32 idx, u64 bytes)
{
	struct kgw_counter_val *c = kgw_stats.lookup(&idx);
	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline void kgw_count(u32 counter, u64 bytes)
{
	kgw_count_slot(KGW_GLOBAL_BASE + counter, bytes);
}

static __always_inline void kgw_count_flow(u32 fe_id, u32 backend_id, u64 bytes)
{
	if (fe_id < KGW_MAX_FRONTENDS)
		kgw_count_slot(fe_id, bytes);
	if (backend_id < KGW_MAX_BACKENDS)
		kgw_count_slot(KGW_BACKEND_BASE + backend_id, bytes);
}

#endif
