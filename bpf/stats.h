/* stats.h — per-CPU counters in the index space of kgw_consts.h. Per-CPU slots need no
 * atomics; userspace sums the CPUs (kgw_l4/loader.py, one accessor per counter).
 *
 * Per packet of a known flow: its global counter, its frontend's and its backend's
 * direction slots (one lookup each, as before directions were counted). A new flow adds
 * its frontend's and backend's flow slots; a drop with a known frontend adds that
 * frontend's slot for the reason. */
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

/* The direction of the flow an entry belongs to (KGW_DIR_*): the reply flag is bit 0. */
static __always_inline u32 kgw_ct_dir(u32 ct_flags)
{
	return ct_flags & KGW_CT_F_REPLY;
}

/* A packet of a flow of frontend fe_id to backend backend_id, going way `dir`. */
static __always_inline void kgw_count_flow(u32 fe_id, u32 backend_id, u32 dir, u64 bytes)
{
	if (fe_id < KGW_MAX_FRONTENDS)
		kgw_count_slot(KGW_FE_BASE + fe_id * 2 + dir, bytes);
	if (backend_id < KGW_MAX_BACKENDS)
		kgw_count_slot(KGW_BACKEND_BASE + backend_id * 2 + dir, bytes);
}

/* A flow was given a backend (once per flow, besides KGW_C_NEW_FLOWS). */
static __always_inline void kgw_count_new_flow(u32 fe_id, u32 backend_id)
{
	if (fe_id < KGW_MAX_FRONTENDS)
		kgw_count_slot(KGW_FE_FLOWS_BASE + fe_id, 0);
	if (backend_id < KGW_MAX_BACKENDS)
		kgw_count_slot(KGW_BE_FLOWS_BASE + backend_id, 0);
}

/* A packet for frontend fe_id dropped for `counter`, one of the reasons counted per
 * frontend (KGW_FE_DROP_FIRST ..): the global counter and the frontend's. */
static __always_inline void kgw_count_drop(u32 counter, u32 fe_id, u64 bytes)
{
	kgw_count(counter, bytes);
	if (fe_id < KGW_MAX_FRONTENDS && counter >= KGW_FE_DROP_FIRST &&
	    counter < KGW_FE_DROP_FIRST + KGW_FE_DROP_COUNT)
		kgw_count_slot(KGW_FE_DROPS_BASE + fe_id * KGW_FE_DROP_COUNT +
				       (counter - KGW_FE_DROP_FIRST), bytes);
}

#endif
