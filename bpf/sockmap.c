/* sockmap.c — splice two TCP sockets in the kernel. The userspace acceptor
 * (kgw_l4/splice.py) accepts a client, connects to the backend, records each socket's
 * peer in kgw_splice_peer and inserts both sockets into kgw_sockhash; this verdict
 * program then sends every skb received on one socket out of the other.
 *
 * Attached as a stream verdict without a stream parser: the kernel hands it whole
 * skbs off the receive queue (tcp_read_skb).
 *
 * Sharp edges (DESIGN.md): a zero-length skb carries a bare FIN — free it (below);
 * userspace sees EOF (EPOLLRDHUP) from the TCP state and forwards the half-close
 * itself, after the redirected bytes are acknowledged. A socket without a peer entry
 * passes. */
#include <uapi/linux/bpf.h>
#include "kgw_maps.h"
#include "stats.h"

BPF_SOCKHASH(kgw_sockhash, struct kgw_sock_key, KGW_SOCKHASH_SIZE);
BPF_HASH(kgw_splice_peer, struct kgw_sock_key, struct kgw_sock_key, KGW_SOCKHASH_SIZE);

int kgw_sk_verdict(struct __sk_buff *skb)
{
	if (skb->len == 0) {
		/* A bare FIN. TCP has already recorded it (RCV_SHUTDOWN: userspace sees
		 * EPOLLRDHUP); the skb has no bytes to deliver. SK_PASS would queue it on
		 * this socket's psock backlog when data for this socket is pending there
		 * (the other direction is busy), and the backlog worker treats a 0-byte
		 * delivery as a hard error: EPIPE, transmit disabled, the rest of that
		 * direction dropped. So free it here. Counted with the passes (0 bytes). */
		kgw_count(KGW_C_SPLICE_PASS, 0);
		return SK_DROP;
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
