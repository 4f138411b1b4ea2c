/* hash.h — the flow hash that indexes the Maglev table.
 *
 * kgw_flow_hash is jhash_3words (Linux lib/jhash.h) over host-order values, so that
 * kgw_l4/maglev.py (flow_hash) can reimplement it for `kgw-inspect flow`;
 * tests/l4/test_abi.py compiles this file with gcc and compares the two. No maps and
 * no BPF helpers other than byte-order macros, which the includer provides. */
#ifndef KGW_HASH_H
#define KGW_HASH_H

#include "kgw_consts.h"
#include "kgw_structs.h"

#define KGW_JHASH_INITVAL 0xdeadbeefU

static __always_inline __u32 kgw_rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

static __always_inline __u32 kgw_jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	initval += KGW_JHASH_INITVAL + (3 << 2);
	a += initval;
	b += initval;
	c += initval;
	c ^= b; c -= kgw_rol32(b, 14);
	a ^= c; a -= kgw_rol32(c, 11);
	b ^= a; b -= kgw_rol32(a, 25);
	c ^= b; c -= kgw_rol32(b, 16);
	a ^= c; a -= kgw_rol32(c, 4);
	b ^= a; b -= kgw_rol32(a, 14);
	c ^= b; c -= kgw_rol32(b, 24);
	return c;
}

static __always_inline __u32 kgw_flow_hash(const struct kgw_flow_key *k)
{
	__u32 ports = ((__u32)bpf_ntohs(k->sport) << 16) | bpf_ntohs(k->dport);
	return kgw_jhash_3words(bpf_ntohl(k->saddr), bpf_ntohl(k->daddr), ports,
				KGW_HASH_SEED ^ k->proto);
}

#endif
