/* sockmap.c — splice two TCP sockets in the kernel. The userspace acceptor
 * (kgw_l4/splice.py) accepts a client, connects to the backend, records each socket's
 * peer in kgw_splice_peer and inserts both sockets into kgw_sockhash; this verdict
 * program then sends every skb received on one socket out of the other.
 *
 * Both maps are keyed by socket cookie (SO_COOKIE), not by address and ports: a socket
 * TCP has closed and unhashed (its peer's FIN after we shut down its write side) reads
 * as local port 0, yet its last skbs still come through here and must still find the
 * peer; and userspace can delete its entries after getpeername() stops working.
 *
 * Attached as a stream verdict without a stream parser: the kernel hands it whole
 * skbs off the receive queue (tcp_read_skb).
 *
 * Sharp edges (DESIGN.md): a zero-length skb carries a bare FIN — free it (below);
 * userspace sees EOF (EPOLLRDHUP) from the TCP state and forwards the half-close
 * itself, after the redirected bytes are acknowledged. A socket without a peer entry
 * passes.
 *
 * Retransmitted bytes (6.x): tcp_read_skb() hands over whole receive-queue skbs and
 * never looks at their sequence numbers, but TCP queues a retransmission that is partly
 * old (seq < rcv_nxt < end_seq; tcp_data_queue "Partial packet", tcp_ofo_queue) whole,
 * trusting readers to skip to copied_seq. Redirected as is, its old head reaches the
 * peer a second time. So the old head (copied_seq - seq) is popped first; nothing new
 * left (old data + FIN) is freed like the bare FIN. The offsets come from the running
 * kernel's BTF (kgw_l4/kernel_btf.py); without them KGW_SPLICE_TRIM is 0. */
#include <uapi/linux/bpf.h>
#include "kgw_maps.h"
#include "stats.h"

BPF_SOCKHASH(kgw_sockhash, u64, KGW_SOCKHASH_SIZE);          /* cookie -> socket */
BPF_HASH(kgw_splice_peer, u64, u64, KGW_SOCKHASH_SIZE);       /* cookie -> peer's cookie */

#ifndef KGW_SPLICE_TRIM
#define KGW_SPLICE_TRIM 0
#endif

/* Bytes at the head of this skb the socket has already consumed: copied_seq minus
 * TCP_SKB_CB(skb)->seq (0 when none). The ctx is the kernel's struct sk_buff;
 * tcp_eat_skb() advances copied_seq by every redirected or dropped skb's length, so
 * copied_seq is the first byte this program has not passed on. */
static __always_inline int kgw_old_bytes(struct __sk_buff *skb)
{
#if KGW_SPLICE_TRIM
	u32 seq = 0, copied = 0;
	u64 sk = 0;
	char *kskb = (char *)(long)skb;
	if (bpf_probe_read_kernel(&seq, sizeof(seq), kskb + KGW_OFF_SKB_CB + KGW_OFF_TCB_SEQ))
		return 0;
	if (bpf_probe_read_kernel(&sk, sizeof(sk), kskb + KGW_OFF_SKB_SK) || !sk)
		return 0;
	if (bpf_probe_read_kernel(&copied, sizeof(copied), (char *)sk + KGW_OFF_TP_COPIED_SEQ))
		return 0;
	int old = (int)(copied - seq);
	if (old <= 0)
		return 0;
	return old > (int)skb->len ? (int)skb->len : old;
#else
	return 0;
#endif
}

/* Pop `old` bytes off the head (sk_skb's adjust_room moves at most 0xfff at a time).
 * Returns the bytes popped. */
static __always_inline int kgw_pop_head(struct __sk_buff *skb, int old)
{
	int left = old;
	for (int i = 0; i < 17 && left > 0; i++) {   /* 17 * 4095 > 64 KB */
		int n = left > 4095 ? 4095 : left;
		if (bpf_skb_adjust_room(skb, -n, 0, 0))
			break;
		left -= n;
	}
	return old - left;
}

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
	u64 cookie = bpf_get_socket_cookie(skb);
	u64 *peer = kgw_splice_peer.lookup(&cookie);
	if (!peer) {
		kgw_count(KGW_C_SPLICE_PASS, skb->len);
		return SK_PASS;
	}
	u64 pk = *peer;
	int old = kgw_old_bytes(skb);
	if (old > 0) {
		int popped = kgw_pop_head(skb, old);
		kgw_count(KGW_C_SPLICE_TRIM, popped);
		if (popped != old)
			kgw_count(KGW_C_SPLICE_TRIM_FAIL, old - popped);
		if (skb->len == 0)
			return SK_DROP;   /* only old bytes (and maybe the FIN): like the bare FIN */
	}
	int verdict = kgw_sockhash.sk_redirect_hash(skb, &pk, 0);
	if (verdict == SK_PASS)
		kgw_count(KGW_C_SPLICE_REDIRECT, skb->len);
	else
		kgw_count(KGW_C_SPLICE_DROP, skb->len);
	return verdict;
}
