/* parse.h — packet parsing shared by TC and XDP. Bounds-check first; return a
 * KGW_PARSE_* code. Offsets are kept (not pointers) because TC helpers invalidate
 * packet pointers. */
#ifndef KGW_PARSE_H
#define KGW_PARSE_H

#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/udp.h>
#include "kgw_structs.h"

#define KGW_PARSE_OK 0
#define KGW_PARSE_NOT_IPV4 1
#define KGW_PARSE_OTHER_PROTO 2 /* IPv4 but not TCP/UDP: not ours */
#define KGW_PARSE_FRAGMENT 3
#define KGW_PARSE_MALFORMED 4

#define KGW_IP_MF 0x2000
#define KGW_IP_OFFSET 0x1fff

/* The longest headers kgw reads: IPv4 and TCP, each with 40 bytes of options (ihl and
 * doff 15), after the Ethernet header. */
#define KGW_IPV4_HDR_MAX 60
#define KGW_TCP_HDR_MAX 60
#define KGW_HDRS_MAX (ETH_HLEN + KGW_IPV4_HDR_MAX + KGW_TCP_HDR_MAX)

struct kgw_pkt {
	struct kgw_flow_key key;
	__u32 l3_off;    /* offset of the IPv4 header */
	__u32 l4_off;    /* offset of the TCP/UDP header */
	__u32 len;       /* bytes of the frame */
	__u8 tcp_flags;  /* byte 13 of the TCP header (0 for UDP) */
	__u8 ip_options; /* IPv4 header longer than 20 bytes */
	__u64 now_ns;    /* the clock as kgw_decide read it (nat.h) */
};

#define KGW_TCP_FIN 0x01
#define KGW_TCP_SYN 0x02
#define KGW_TCP_RST 0x04
#define KGW_TCP_ACK 0x10

static __always_inline int kgw_parse(void *data, void *data_end, struct kgw_pkt *p)
{
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return KGW_PARSE_NOT_IPV4;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return KGW_PARSE_NOT_IPV4;

	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return KGW_PARSE_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return KGW_PARSE_MALFORMED;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return KGW_PARSE_OTHER_PROTO;
	if (ip->frag_off & bpf_htons(KGW_IP_MF | KGW_IP_OFFSET))
		return KGW_PARSE_FRAGMENT;

	__u32 ihl = (ip->ihl & 0xf) * 4;
	/* tot_len 0 is IPv4 BIG TCP (GRO packets above 64 KiB); otherwise it must cover
	 * the headers. */
	__u16 tot = bpf_ntohs(ip->tot_len);
	if (tot != 0 && tot < ihl)
		return KGW_PARSE_MALFORMED;

	p->l3_off = sizeof(*eth);
	p->l4_off = sizeof(*eth) + ihl;
	p->len = data_end - data;
	p->ip_options = ihl > sizeof(*ip);
	p->key.saddr = ip->saddr;
	p->key.daddr = ip->daddr;
	p->key.proto = ip->protocol;
	p->key.pad[0] = 0;
	p->key.pad[1] = 0;
	p->key.pad[2] = 0;
	p->tcp_flags = 0;

	void *l4 = data + p->l4_off;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;
		if ((void *)(tcp + 1) > data_end)
			return KGW_PARSE_MALFORMED;
		if (tcp->doff < 5 || (void *)tcp + tcp->doff * 4 > data_end)
			return KGW_PARSE_MALFORMED;
		if (tot != 0 && tot < ihl + tcp->doff * 4)
			return KGW_PARSE_MALFORMED;
		p->key.sport = tcp->source;
		p->key.dport = tcp->dest;
		p->tcp_flags = ((__u8 *)tcp)[13];
	} else {
		struct udphdr *udp = l4;
		if ((void *)(udp + 1) > data_end)
			return KGW_PARSE_MALFORMED;
		p->key.sport = udp->source;
		p->key.dport = udp->dest;
	}
	return KGW_PARSE_OK;
}

/* The IPv4 header and the port pair of a packet kgw_parse accepted, found again from
 * `data` with the bounds checks the verifier needs before a write (the hooks call it
 * after helpers that may have moved the packet). NULL when they do not fit. */
static __always_inline struct iphdr *kgw_ip_ports(void *data, void *data_end,
						  const struct kgw_pkt *p, __be16 **ports)
{
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > data_end)
		return NULL;
	__u32 l4_off = p->l4_off;
	if (l4_off > sizeof(struct ethhdr) + KGW_IPV4_HDR_MAX)
		return NULL;
	__be16 *pp = data + l4_off;
	if ((void *)(pp + 2) > data_end)
		return NULL;
	*ports = pp;
	return ip;
}

#endif
