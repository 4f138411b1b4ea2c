/* lb_xdp.c — the same load balancer at XDP: parse, decide (nat.h), rewrite with
 * incremental checksums (csum.h: packets from a NIC carry complete checksums), FIB
 * lookup and redirect. Packets XDP cannot forward go to TC unmodified (kgw_xdp_fib). */
#include <uapi/linux/bpf.h>
#include "nat.h"
#include "csum.h"

static __always_inline int kgw_xdp_rewrite(struct xdp_md *ctx, struct kgw_pkt *p,
					   const struct kgw_rewrite *rw)
{
	void *data_end = (void *)(long)ctx->data_end;
	__be16 *ports;
	struct iphdr *ip = kgw_ip_ports((void *)(long)ctx->data, data_end, p, &ports);
	if (!ip)
		return -1;
	void *l4 = ports;
	__sum16 *l4_csum;
	if (p->key.proto == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return -1;
		l4_csum = &tcp->check;
	} else {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return -1;
		l4_csum = &udp->check;
	}
	int l4_none = p->key.proto == IPPROTO_UDP && *l4_csum == 0;

	/* One difference per word pair (csum.h); the L4 checksum takes both. */
	__u32 addr_diff = kgw_csum_diff2(ip->saddr, ip->daddr, rw->saddr, rw->daddr);
	__u32 port_diff = kgw_csum_diff2_16(ports[0], ports[1], rw->sport, rw->dport);
	kgw_csum_apply(&ip->check, addr_diff);
	if (!l4_none) {
		kgw_csum_apply(l4_csum, kgw_csum_add(addr_diff, port_diff));
		if (p->key.proto == IPPROTO_UDP && *l4_csum == 0)
			*l4_csum = 0xffff;
	}
	ip->saddr = rw->saddr;
	ip->daddr = rw->daddr;
	ports[0] = rw->sport;
	ports[1] = rw->dport;
	return 0;
}

/* FIB lookup for the rewritten tuple, before touching the packet: what XDP cannot
 * forward itself (neighbour unresolved, MTU, forwarding off) goes up unmodified, and
 * the TC program (attached too in XDP mode, same maps) finds the flow entry and
 * forwards it with bpf_redirect_neigh. So the first packets of a flow to a new
 * neighbour take the TC path and the rest stay in XDP. */
static __always_inline int kgw_xdp_fib(struct xdp_md *ctx, struct kgw_pkt *p,
				       const struct kgw_rewrite *rw, struct bpf_fib_lookup *fib)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end)
		return -1;
	fib->family = KGW_AF_INET;
	fib->ipv4_src = rw->saddr;
	fib->ipv4_dst = rw->daddr;
	fib->tot_len = bpf_ntohs(ip->tot_len);
	fib->ifindex = ctx->ingress_ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

int kgw_xdp(struct xdp_md *ctx)
{
	struct kgw_pkt p = {};
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	switch (kgw_parse(data, data_end, &p)) {
	case KGW_PARSE_OK:
		break;
	case KGW_PARSE_FRAGMENT:
		kgw_count(KGW_C_PASS_FRAGMENT, data_end - data);
		return XDP_PASS;
	case KGW_PARSE_MALFORMED:
		kgw_count(KGW_C_DROP_MALFORMED, data_end - data);
		return XDP_DROP;
	case KGW_PARSE_NOT_IPV4:
		kgw_count(KGW_C_PASS_NOT_IPV4, data_end - data);
		return XDP_PASS;
	default:
		return XDP_PASS;
	}
	struct kgw_rewrite rw;
	int act = kgw_decide(ctx, &p, &rw, 1);
	if (act == KGW_ACT_PASS)
		return XDP_PASS;
	if (act == KGW_ACT_DROP)
		return XDP_DROP;
	struct bpf_fib_lookup fib = {};
	int rc = kgw_xdp_fib(ctx, &p, &rw, &fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		if (rc == BPF_FIB_LKUP_RET_NO_NEIGH || rc == BPF_FIB_LKUP_RET_FRAG_NEEDED ||
		    rc == BPF_FIB_LKUP_RET_FWD_DISABLED) {
			kgw_count(KGW_C_FIB_PASS, p.len);
			return XDP_PASS; /* to TC, unmodified */
		}
		kgw_count_drop(KGW_C_DROP_FIB, rw.fe_id, p.len);
		return XDP_DROP;
	}
	if (kgw_xdp_rewrite(ctx, &p, &rw)) {
		kgw_count_drop(KGW_C_DROP_REWRITE, rw.fe_id, p.len);
		return XDP_DROP;
	}
	data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)(long)ctx->data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	kgw_count(KGW_C_FWD_XDP, p.len);
	return bpf_redirect(fib.ifindex, 0);
}
