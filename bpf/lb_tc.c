/* lb_tc.c — the load balancer at TC (clsact ingress): parse, decide (nat.h), rewrite
 * in place with the checksum differences of csum.h (bpf_l4_csum_replace keeps partial
 * checksums correct), FIB lookup (cached per CPU for a short time) and redirect.
 * Attach on every interface that receives client or backend traffic. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "nat.h"
#include "csum.h"

/* bcc 0.26 declares bpf_redirect_neigh with three arguments; the kernel takes four. */
static long (*kgw_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

/* Rewrite addresses and ports in place (direct packet access; the verifier's prologue
 * unclones the skb once, as bpf_skb_store_bytes would) and fix the checksums with
 * one difference per word pair (csum.h): the IPv4 header checksum in place, the L4
 * one through bpf_l4_csum_replace, which knows the skb's checksum state. */
static __always_inline int kgw_tc_rewrite(struct __sk_buff *skb, struct kgw_pkt *p,
					  const struct kgw_rewrite *rw)
{
	__be16 *ports;
	struct iphdr *ip = kgw_ip_ports((void *)(long)skb->data, (void *)(long)skb->data_end,
					p, &ports);
	if (!ip)
		return -1;
	__u32 l4_csum = p->l4_off + (p->key.proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							       : offsetof(struct udphdr, check));
	/* UDP checksum 0 means "none": leave it 0 (BPF_F_MARK_MANGLED_0 keeps it so). */
	__u64 l4f = p->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	int addrs = rw->saddr != p->key.saddr || rw->daddr != p->key.daddr;
	int port_change = rw->sport != p->key.sport || rw->dport != p->key.dport;
	__u32 addr_diff = kgw_csum_diff2(p->key.saddr, p->key.daddr, rw->saddr, rw->daddr);
	__u32 port_diff = kgw_csum_diff2_16(p->key.sport, p->key.dport, rw->sport, rw->dport);
	if (addrs) {
		kgw_csum_apply(&ip->check, addr_diff);
		ip->saddr = rw->saddr;
		ip->daddr = rw->daddr;
	}
	if (port_change) {
		ports[0] = rw->sport;
		ports[1] = rw->dport;
	}
	/* Packet pointers are invalid after these calls. */
	if (addrs && bpf_l4_csum_replace(skb, l4_csum, 0, addr_diff, l4f | BPF_F_PSEUDO_HDR))
		return -1;
	if (port_change && bpf_l4_csum_replace(skb, l4_csum, 0, port_diff, l4f))
		return -1;
	return 0;
}

/* bpf_fib_lookup for the rewritten tuple, or its result from the per-CPU cache
 * (kgw_fib_cache) when the same lookup succeeded less than KGW_FIB_CACHE_NS ago.
 * A hit also requires the packet to fit the cached egress MTU (or be GSO), which is
 * what the real lookup checks for tot_len 0: a packet that does not fit takes the
 * real lookup and gets its FRAG_NEEDED. Only successes are cached: NO_NEIGH and the
 * rest are decided by the kernel on every packet. Route and neighbour changes reach a
 * flow within KGW_FIB_CACHE_NS (vm_tests/test_datapath.py tests both). */
static __always_inline int kgw_tc_fib(struct __sk_buff *skb, const struct kgw_rewrite *rw,
				      __u64 now, struct bpf_fib_lookup *fib)
{
	__u32 iif = skb->ingress_ifindex;
	__u32 slot = kgw_jhash_3words(rw->saddr, rw->daddr, iif, KGW_HASH_SEED) &
		     (KGW_FIB_CACHE_SIZE - 1);
	struct kgw_fib_entry *c = kgw_fib_cache.lookup(&slot);
	if (c && c->stamp_ns && c->saddr == rw->saddr && c->daddr == rw->daddr && c->iif == iif &&
	    now >= c->stamp_ns && now - c->stamp_ns < KGW_FIB_CACHE_NS &&
	    (skb->len <= (__u32)c->mtu + ETH_HLEN || skb->gso_size)) {
		fib->ifindex = c->oif;
		__builtin_memcpy(fib->smac, c->smac, ETH_ALEN);
		__builtin_memcpy(fib->dmac, c->dmac, ETH_ALEN);
		return BPF_FIB_LKUP_RET_SUCCESS;
	}
	fib->family = KGW_AF_INET;
	fib->ipv4_src = rw->saddr;
	fib->ipv4_dst = rw->daddr;
	fib->ifindex = iif;
	/* tot_len 0: let the kernel check the MTU against the skb (GSO-aware); on success
	 * it reports the egress device's MTU in mtu_result. */
	int rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS && c) {
		c->stamp_ns = now;
		c->saddr = rw->saddr;
		c->daddr = rw->daddr;
		c->iif = iif;
		c->oif = fib->ifindex;
		c->mtu = fib->mtu_result;
		__builtin_memcpy(c->smac, fib->smac, ETH_ALEN);
		__builtin_memcpy(c->dmac, fib->dmac, ETH_ALEN);
	}
	return rc;
}

static __always_inline int kgw_tc_forward(struct __sk_buff *skb, const struct kgw_rewrite *rw,
					  __u64 now)
{
	struct bpf_fib_lookup fib = {};
	int rc = kgw_tc_fib(skb, rw, now, &fib);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		void *data = (void *)(long)skb->data;
		void *data_end = (void *)(long)skb->data_end;
		struct ethhdr *eth = data;
		if ((void *)(eth + 1) > data_end)
			return TC_ACT_SHOT;
		__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
		kgw_count(KGW_C_FWD_TC, skb->len);
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		kgw_count(KGW_C_FWD_TC, skb->len);
		return kgw_redirect_neigh(fib.ifindex, NULL, 0, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED || rc == BPF_FIB_LKUP_RET_FWD_DISABLED) {
		/* The stack forwards it (and sends ICMP frag-needed if it must). */
		kgw_count(KGW_C_FIB_PASS, skb->len);
		return TC_ACT_OK;
	}
	kgw_count_drop(KGW_C_DROP_FIB, rw->fe_id, skb->len);
	return TC_ACT_SHOT;
}

int kgw_tc(struct __sk_buff *skb)
{
	struct kgw_pkt p = {};
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	int rc = kgw_parse(data, data_end, &p);
	if (rc == KGW_PARSE_MALFORMED && skb->len > data_end - data) {
		/* Headers may sit in paged data: pull them into the linear area and retry. */
		__u32 want = skb->len < KGW_HDRS_MAX ? skb->len : KGW_HDRS_MAX;
		if (bpf_skb_pull_data(skb, want) == 0) {
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			rc = kgw_parse(data, data_end, &p);
		}
	}
	switch (rc) {
	case KGW_PARSE_OK:
		break;
	case KGW_PARSE_FRAGMENT:
		kgw_count(KGW_C_PASS_FRAGMENT, skb->len);
		return TC_ACT_OK;
	case KGW_PARSE_MALFORMED:
		kgw_count(KGW_C_DROP_MALFORMED, skb->len);
		return TC_ACT_SHOT;
	case KGW_PARSE_NOT_IPV4:
		kgw_count(KGW_C_PASS_NOT_IPV4, skb->len);
		return TC_ACT_OK;
	default:
		return TC_ACT_OK;
	}
	p.len = skb->len;

	struct kgw_rewrite rw;
	int act = kgw_decide(skb, &p, &rw, 0);
	if (act == KGW_ACT_PASS)
		return TC_ACT_OK;
	if (act == KGW_ACT_DROP)
		return TC_ACT_SHOT;
	if (kgw_tc_rewrite(skb, &p, &rw)) {
		kgw_count_drop(KGW_C_DROP_REWRITE, rw.fe_id, skb->len);
		return TC_ACT_SHOT;
	}
	return kgw_tc_forward(skb, &rw, p.now_ns);
}
