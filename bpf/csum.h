/* csum.h — incremental Internet checksum updates (RFC 1624).
 *
 * A NAT rewrite changes two address words (in the IPv4 header and, through the pseudo
 * header, in the TCP/UDP checksum) and one port word (TCP/UDP checksum only). Both
 * hooks compute one 32-bit one's-complement difference per word pair here, in plain
 * arithmetic, and apply it once per checksum field:
 * - the IPv4 header checksum is always complete: both hooks fix it in place;
 * - the TCP/UDP checksum at XDP is complete too (packets from a NIC; on veth the
 *   sending peer must have tx checksum offload off, vm_tests/topology.py does that);
 * - at TC it may be partial (CHECKSUM_PARTIAL skbs from veth or local senders: the
 *   field holds only the pseudo-header sum) or covered by skb->csum (CHECKSUM_COMPLETE),
 *   so TC hands the differences to bpf_l4_csum_replace (size 0 = "a difference"):
 *   the address one with BPF_F_PSEUDO_HDR, the port one without, which the kernel
 *   applies or skips per skb state. One call for both would add the ports into a
 *   partial checksum, or subtract them from skb->csum, and break either. */
#ifndef KGW_CSUM_H
#define KGW_CSUM_H

static __always_inline __u16 kgw_csum_fold(__u32 csum)
{
	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)csum;
}

/* The one's-complement difference that turns the sum over (from1, from2) into the sum
 * over (to1, to2): what csum_diff() returns, without the helper call. */
static __always_inline __u32 kgw_csum_diff2(__u32 from1, __u32 from2, __u32 to1, __u32 to2)
{
	__u64 s = (__u64)(__u32)~from1 + (__u32)~from2 + to1 + to2;
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)s;
}

/* The same for a pair of 16-bit words (the ports). */
static __always_inline __u32 kgw_csum_diff2_16(__u16 from1, __u16 from2, __u16 to1, __u16 to2)
{
	return (__u32)(__u16)~from1 + (__u16)~from2 + to1 + to2;
}

static __always_inline __u32 kgw_csum_add(__u32 a, __u32 b)
{
	__u64 s = (__u64)a + b;
	s = (s & 0xffffffff) + (s >> 32);
	return (__u32)s;
}

/* *sum is the stored (complemented) checksum; apply a difference from kgw_csum_diff*
 * (the kernel's csum_replace_by_diff). */
static __always_inline void kgw_csum_apply(__sum16 *sum, __u32 diff)
{
	__u32 s = (__u16)~*sum;
	s += diff & 0xffff;
	s += diff >> 16;
	*sum = ~kgw_csum_fold(s);
}

#endif
