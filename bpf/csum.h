/* csum.h — incremental Internet checksum updates (RFC 1624) for hooks without skb
 * helpers (XDP). TC uses bpf_l3/l4_csum_replace instead, which also handle the
 * partial checksums of CHECKSUM_PARTIAL skbs (veth, local senders). XDP sees only
 * packets with complete checksums from a NIC; on veth the sending peer must have
 * tx checksum offload off (vm_tests/topology.py does that). */
#ifndef KGW_CSUM_H
#define KGW_CSUM_H

static __always_inline __u16 kgw_csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)csum;
}

/* *sum is the stored (complemented) checksum; replace 32-bit word `from` by `to`. */
static __always_inline void kgw_csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__u32 s = (__u16)~*sum;
	s += (__u16)~(from & 0xffff);
	s += (__u16)~(from >> 16);
	s += (to & 0xffff);
	s += (to >> 16);
	*sum = ~kgw_csum_fold(s);
}

static __always_inline void kgw_csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	__u32 s = (__u16)~*sum;
	s += (__u16)~from;
	s += to;
	*sum = ~kgw_csum_fold(s);
}

#endif
