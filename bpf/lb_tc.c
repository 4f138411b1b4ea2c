/* lb_tc.c — the load balancer at TC (clsact ingress): parse, decide (nat.h), rewrite
 * with the skb checksum helpers (correct for partial checksums too), FIB lookup and
 * redirect. Attach on every interface that receives client or backend traffic. */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include "nat.h"

/* bcc 0.26 declares bpf_redirect_neigh with three arguments; the kernel takes four. */
static long (*kgw_redirect_neigh)(__u32 ifindex, void *params, int plen, __u64 flags) =
	(void *)BPF_FUNC_redirect_neigh;

#define IP_CSUM_OFF(p) ((p)->l3_off + offsetof(struct iphdr, check))
#define IP_SRC_OFF(p) ((p)->l3_off + offsetof(struct iphdr, saddr))
#define IP_DST_OFF(p) ((p)->l3_off + offsetof(struct iphdr, daddr))

static __always_inline int kgw_tc_rewrite(struct __sk_buff *skb, struct kgw_pkt *p,
					  struct kgw_rewrite *rw)
{
	__u32 l4_csum, sport_off = p->l4_off, dport_off = p->l4_off + 2;
	if (p->key.proto == IPPROTO_TCP)
		l4_csum = p->l4_off + offsetof(struct tcphdr, check);
	else
		l4_csum = p->l4_off + offsetof(struct udphdr, check);

	/* UDP checksum 0 means "none": leave it 0 (BPF_F_MARK_MANGLED_0 keeps it so). */
	__u64 l4f = p->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	if (rw->saddr != p->key.saddr) {
		if (bpf_l4_csum_replace(skb, l4_csum, p->key.saddr, rw->saddr,
					l4f | BPF_F_PSEUDO_HDR | sizeof(__be32)) ||
		    bpf_l3_csum_replace(skb, IP_CSUM_OFF(p), p->key.saddr, rw->saddr, sizeof(__be32)) ||
		    bpf_skb_store_bytes(skb, IP_SRC_OFF(p), &rw->saddr, sizeof(__be32), 0))
			return -1;
	}
	if (rw->daddr != p->key.daddr) {
		if (bpf_l4_csum_replace(skb, l4_csum, p->key.daddr, rw->daddr,
					l4f | BPF_F_PSEUDO_HDR | sizeof(__be32)) ||
		    bpf_l3_csum_replace(skb, IP_CSUM_OFF(p), p->key.daddr, rw->daddr, sizeof(__be32)) ||
		    bpf_skb_store_bytes(skb, IP_DST_OFF(p), &rw->daddr, sizeof(__be32), 0))
			return -1;
	}
	if (rw->sport != p->key.sport) {
		if (bpf_l4_csum_replace(skb, l4_csum, p->key.sport, rw->sport, l4f | sizeof(__be16)) ||
		    bpf_skb_store_bytes(skb, sport_off, &rw->sport, sizeof(__be16), 0))
			return -1;
	}
	if (rw->dport != p->key.dport) {
		if (bpf_l4_csum_replace(skb, l4_csum, p->key.dport, rw->dport, l4f | sizeof(__be16)) ||
		    bpf_skb_store_bytes(skb, dport_off, &rw->dport, sizeof(__be16), 0))
			return -1;
	}
	return 0;
}

static __always_inline int kgw_tc_forward(struct __sk_buff *skb, const struct kgw_rewrite *rw)
{
	struct bpf_fib_lookup fib = {};
	fib.family = 2; /* AF_INET */
	fib.l4_protocol = 0;
	fib.ipv4_src = rw->saddr;
	fib.ipv4_dst = rw->daddr;
	fib.ifindex = skb->ingress_ifindex;
	/* tot_len 0: let the kernel check the MTU against the skb (GSO-aware). */
	int rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
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
	kgw_count(KGW_C_DROP_FIB, skb->len);
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
		__u32 want = skb->len < 134 ? skb->len : 134;
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
	int act = kgw_decide(skb, &p, &rw);
	if (act == KGW_ACT_PASS)
		return TC_ACT_OK;
	if (act == KGW_ACT_DROP)
		return TC_ACT_SHOT;
	if (kgw_tc_rewrite(skb, &p, &rw)) {
		kgw_count(KGW_C_DROP_REWRITE, skb->len);
		return TC_ACT_SHOT;
	}
	return kgw_tc_forward(skb, &rw);
}
