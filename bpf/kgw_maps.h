/* kgw_maps.h — every map, pinned under KGW_PIN_DIR so that a restarted agent adopts
 * them (bcc reuses a pin that exists and pins a new map otherwise).
 * Map names are part of the ABI: kgw_l4/loader.py opens them by these names. */
#ifndef KGW_MAPS_H
#define KGW_MAPS_H

#include "kgw_consts.h"
#include "kgw_structs.h"

#define KGW_PIN(name) KGW_PIN_DIR "/" #name

/* (addr, port, proto) -> frontend */
BPF_TABLE_PINNED("hash", struct kgw_fe_key, struct kgw_fe_val, kgw_frontends,
		 KGW_MAX_FRONTENDS, KGW_PIN(kgw_frontends));
/* backend_id -> backend */
BPF_TABLE_PINNED("array", u32, struct kgw_backend, kgw_backends, KGW_MAX_BACKENDS,
		 KGW_PIN(kgw_backends));
/* fe_id * KGW_MAGLEV_SIZE + slot -> backend_id (KGW_NO_BACKEND when empty) */
BPF_TABLE_PINNED("array", u32, u32, kgw_maglev, KGW_MAX_FRONTENDS * KGW_MAGLEV_SIZE,
		 KGW_PIN(kgw_maglev));
/* established flows, both directions */
BPF_TABLE_PINNED("lru_hash", struct kgw_flow_key, struct kgw_ct_entry, kgw_ct, KGW_CT_SIZE,
		 KGW_PIN(kgw_ct));
/* embryonic flows, both directions (see kgw_consts.h) */
BPF_TABLE_PINNED("lru_hash", struct kgw_flow_key, struct kgw_ct_entry, kgw_ct_syn,
		 KGW_CT_SYN_SIZE, KGW_PIN(kgw_ct_syn));
/* node addresses: frontends with address 0 match only these destinations */
BPF_TABLE_PINNED("hash", __be32, u32, kgw_local_addrs, KGW_MAX_LOCAL_ADDRS,
		 KGW_PIN(kgw_local_addrs));
/* (addr, port, IPPROTO_TCP) -> new-connection rate limit (synlimit.h) */
BPF_TABLE_PINNED("hash", struct kgw_fe_key, struct kgw_syn_limit, kgw_syn_limits,
		 KGW_MAX_SYN_LIMITS, KGW_PIN(kgw_syn_limits));
/* (source, limit) -> the source's bucket */
BPF_TABLE_PINNED("lru_hash", struct kgw_syn_src_key, struct kgw_syn_src, kgw_syn_sources,
		 KGW_SYN_SOURCES, KGW_PIN(kgw_syn_sources));
BPF_TABLE_PINNED("array", u32, struct kgw_settings, kgw_settings, 1, KGW_PIN(kgw_settings));
/* recent FIB results, per CPU (kgw_structs.h, struct kgw_fib_entry) */
BPF_TABLE_PINNED("percpu_array", u32, struct kgw_fib_entry, kgw_fib_cache, KGW_FIB_CACHE_SIZE,
		 KGW_PIN(kgw_fib_cache));
BPF_TABLE_PINNED("percpu_array", u32, struct kgw_counter_val, kgw_stats, KGW_STATS_SIZE,
		 KGW_PIN(kgw_stats));

#endif
