/* maglev.h — Maglev lookup. The table itself is computed in userspace
 * (kgw_l4/maglev.py); this file only reads the slot the flow hash (hash.h) selects. */
#ifndef KGW_MAGLEV_H
#define KGW_MAGLEV_H

#include "kgw_maps.h"
#include "hash.h"

/* backend_id for a new flow, or KGW_NO_BACKEND */
static __always_inline __u32 kgw_maglev_pick(__u32 fe_id, const struct kgw_flow_key *k)
{
	if (fe_id >= KGW_MAX_FRONTENDS)
		return KGW_NO_BACKEND;
	__u32 idx = fe_id * KGW_MAGLEV_SIZE + kgw_flow_hash(k) % KGW_MAGLEV_SIZE;
	__u32 *bid = kgw_maglev.lookup(&idx);
	if (!bid)
		return KGW_NO_BACKEND;
	return *bid;
}

#endif
