/* sockmap.c — splice two TCP sockets in the kernel. The userspace acceptor
 * (kgw_l4/splice.py) accepts a client, connects to the backend, records each socket's
 * peer in kgw_splice_peer and inserts both sockets into kgw_sockhash; this verdict
 * program then sends every skb received on one socket out of the other.
 *
 * Sharp edges (DESIGN.md): a zero-length skb carries the FIN — pass it to the socket
 * so userspace sees EOF (EPOLLRDHUP) and forwards the half-close itself, after the
 * redirected bytes are acknowledged. A socket without a peer entry passes too. */
#include <uapi/linux/bpf.h>
#include "kgw_maps.h"
#include "stats.h"

BPF_SOCKHASH(kgw_sockhash, struct kgw_sock_key, KGW_SOCKHASH_SIZE);
BPF_HASH(kgw_splice_peer, struct kgw_sock_key, struct kgw_sock_key, KGW_SOCKHASH_SIZE);

/* Stream parser: every skb is one message (no framing). With a parser attached the
 * kernel feeds the verdict through strparser, which keeps TCP ordering and copied_seq
 * accounting on the classic tcp_read_sock path. */
int kgw_sk_parser(struct __sk_buff *skb)
{
	return skb->len;
}

int kgw_sk_verdict(struct __sk_buff *skb)
{
	if (skb->len == 0) {
		kgw_count(KGW_C_SPLICE_PASS, 0);
		return SK_PASS;
	}
	struct kgw_sock_key k = {};
	k.local_addr = skb->local_ip4;
	k.remote_addr = skb->remote_ip4;
	k.local_port = skb->local_port;                 /* host order already */
	k.remote_port = bpf_ntohl(skb->remote_port);   /* network order in the upper half */
	struct kgw_sock_key *peer = kgw_splice_peer.lookup(&k);
	if (!peer) {
		kgw_count(KGW_C_SPLICE_PASS, skb->len);
		return SK_PASS;
	}
	struct kgw_sock_key pk = *peer;
	int verdict = kgw_sockhash.sk_redirect_hash(skb, &pk, 0);
	if (verdict == SK_PASS)
		kgw_count(KGW_C_SPLICE_REDIRECT, skb->len);
	else
		kgw_count(KGW_C_SPLICE_DROP, skb->len);
	return verdict;
}
