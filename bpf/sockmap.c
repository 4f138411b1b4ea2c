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
 * passes. An skb whose peer is not in the sockhash yet (the agent inserts the two
 * sockets one after the other, and a FIN runs this program at once) is held like one
 * the peer cannot take (below), or dropped where holds are not built in.
 *
 * Retransmitted bytes (6.x): tcp_read_skb() hands over whole receive-queue skbs and
 * never looks at their sequence numbers, but TCP queues a retransmission that is partly
 * old (seq < rcv_nxt < end_seq; tcp_data_queue "Partial packet", tcp_ofo_queue) whole,
 * trusting readers to skip to copied_seq. Redirected as is, its old head reaches the
 * peer a second time. So the old head is popped first (up to where the last skb
 * handled here ended, kgw_splice_peer.next_seq); nothing new
 * left (old data + FIN) is freed like the bare FIN. The offsets come from the running
 * kernel's BTF (kgw_l4/kernel_btf.py); without them KGW_SPLICE_TRIM is 0.
 *
 * Backpressure: a redirect takes the skb off the source socket at once (its receive
 * window reopens) and queues it on the peer's psock for a worker that writes it into
 * the peer's send buffer; that queue has no bound of its own. So when the peer's queue
 * holds more than KGW_SPLICE_BACKLOG_MAX skbs (1024 by default; 0: never), the verdict
 * *holds* the direction:
 * SK_PASS puts the skb on the source socket's own queue, where it stays charged to the
 * socket's receive memory until userspace reads it: the receive window closes and the
 * sender is slowed like any TCP sender. A ring buffer event tells userspace, which
 * waits until the peer has written out everything redirected so far (the byte counts
 * in kgw_splice_peer), then copies the held bytes itself, with flow control. Order is
 * kept by counting: kgw_splice_peer.passed (bytes held, counted here) against
 * kgw_splice_hold (bytes the agent has read *and written*, published by it): while
 * they differ every skb is held, so none can overtake a held byte, and the direction
 * goes back to the kernel exactly when the agent has caught up. (An earlier version
 * deleted a hold flag and relied on copied_seq to hold skbs behind unread bytes; a
 * redirect in that window reordered 1 in ~40 slow-backend runs.) Needs the psock
 * offsets from BTF (KGW_SPLICE_BACKPRESSURE); without them every skb is redirected.
 * Limit: SK_PASS queues the skb on the source's own psock queue (uncharged) instead
 * of its socket when that queue is not empty, i.e. when the other direction is stuck
 * too; past KGW_SPLICE_OVERFLOW_MAX skbs there (a client that sends and never
 * reads) userspace resets the connection (kgw_hold).
 *
 * Why not pause a direction by taking its source out of the sockhash instead (no
 * copying)? Tried: the kernel drops (and acknowledges) an skb whose verdict runs while
 * the psock goes away (sk_psock_verdict_recv without a psock), and the flow stalled
 * now and then; a socket must stay in the map while bytes can arrive. */
#include <uapi/linux/bpf.h>
#include "kgw_maps.h"
#include "kgw_splice.h"
#include "stats.h"

/* TCP_SKB_CB(skb)->seq and the socket's copied_seq (0 when unknown). The ctx is the
 * kernel's struct sk_buff; tcp_eat_skb() advances copied_seq by every redirected or
 * dropped skb's length, reading advances it by the bytes read. */
static __always_inline int kgw_tcp_seqs(struct __sk_buff *skb, u32 *seq, u32 *copied)
{
#if KGW_SPLICE_TRIM || KGW_SPLICE_BACKPRESSURE
	u64 sk = 0;
	char *kskb = (char *)(long)skb;
	if (bpf_probe_read_kernel(seq, sizeof(*seq), kskb + KGW_OFF_SKB_CB + KGW_OFF_TCB_SEQ))
		return 0;
	if (bpf_probe_read_kernel(&sk, sizeof(sk), kskb + KGW_OFF_SKB_SK) || !sk)
		return 0;
	if (bpf_probe_read_kernel(copied, sizeof(*copied), (char *)sk + KGW_OFF_TP_COPIED_SEQ))
		return 0;
	return 1;
#else
	return 0;
#endif
}

/* Pop `old` bytes off the head, KGW_ADJUST_ROOM_MAX at a time. Returns the bytes
 * popped. An skb can be far larger than one GSO segment: TCP coalesces out-of-order
 * segments while a hole is open, and a retransmission that fills the hole can leave a
 * 250 KB coalesced skb whose head is old (seen with held directions, whose charged
 * receive buffers make the senders retransmit a lot). So the bound covers
 * MAX_SKB_FRAGS (17) frags of 64 KB. */
#define KGW_POP_STEPS 280   /* 280 * KGW_ADJUST_ROOM_MAX > 17 * 64 KB */
static __always_inline int kgw_pop_head(struct __sk_buff *skb, int old)
{
	int left = old;
	for (int i = 0; i < KGW_POP_STEPS && left > 0; i++) {
		int n = left > KGW_ADJUST_ROOM_MAX ? KGW_ADJUST_ROOM_MAX : left;
		if (bpf_skb_adjust_room(skb, -n, 0, 0))
			break;
		left -= n;
	}
	return old - left;
}

#if KGW_SPLICE_BACKPRESSURE
/* skbs on a socket's psock queue (sk: the struct sock's address): bytes redirected to
 * it and not yet written out, and its own held skbs queued behind them. 0 if unknown. */
static __always_inline u32 kgw_psock_qlen(u64 sk)
{
	u64 psock = 0;
	u32 qlen = 0;
	if (!sk || bpf_probe_read_kernel(&psock, sizeof(psock), (char *)sk + KGW_OFF_SK_USER_DATA))
		return 0;
	if (!(psock & KGW_SK_USER_DATA_PSOCK))
		return 0;
	psock &= KGW_SK_USER_DATA_PTRMASK;
	if (bpf_probe_read_kernel(&qlen, sizeof(qlen),
				  (char *)psock + KGW_OFF_PSOCK_INGRESS_SKB + KGW_OFF_SKB_HEAD_QLEN))
		return 0;
	return qlen;
}

/* The peer socket's psock queue length. */
static __always_inline u32 kgw_peer_backlog(u64 *peer)
{
	struct bpf_sock *sk = kgw_sockhash.lookup(peer);
	if (!sk)
		return 0;
	u64 addr = 0;
	/* The verifier forbids arithmetic on a socket pointer: take its value. */
	bpf_probe_read_kernel(&addr, sizeof(addr), &sk);
	bpf_sk_release(sk);
	return kgw_psock_qlen(addr);
}

static __always_inline int kgw_notify(u64 cookie, u32 kind)
{
	struct kgw_splice_event e = { .cookie = cookie, .kind = kind };
	return kgw_splice_evt.ringbuf_output(&e, sizeof(e), 0);
}

/* Held bytes the agent has not taken yet (kgw_splice_hold has what it has read and
 * written): nonzero while it owes some. */
static __always_inline int kgw_owes(struct kgw_splice_peer *sp, u64 *cookie)
{
	u64 *taken = kgw_splice_hold.lookup(cookie);
	return sp->passed != (taken ? *taken : 0);
}

/* Hold this socket's direction: pass the skb to the agent. The first skb of a hold
 * (nothing owed before it) tells userspace; -1 if that message cannot be sent. */
static __always_inline int kgw_hold(struct __sk_buff *skb, u64 cookie,
				    struct kgw_splice_peer *sp, int first)
{
	/* A held skb goes onto the socket's own psock queue, uncharged, while that queue
	 * still has bytes of the other direction to send: those drain once this side
	 * reads, but a client that keeps sending and never reads would fill the gateway.
	 * That queue holds up to about KGW_SPLICE_BACKLOG_MAX skbs of the other
	 * direction, and a full-duplex peer (an echo) adds about as many held ones while
	 * they drain; past KGW_SPLICE_OVERFLOW_MAX, userspace resets the connection, and
	 * until it has the skbs are dropped (the connection is lost anyway). (Holding the
	 * other direction as well, so that this queue only drains, made things worse: a
	 * client reading slower than it sends then had all its sends held uncharged.) */
	u64 sk = 0;
	bpf_probe_read_kernel(&sk, sizeof(sk), (char *)(long)skb + KGW_OFF_SKB_SK);
	if (kgw_psock_qlen(sk) > KGW_SPLICE_OVERFLOW_MAX) {
		if (!(sp->flags & KGW_SPLICE_F_OVERFLOW) &&
		    kgw_notify(cookie, KGW_SPLICE_EVT_OVERFLOW) == 0)
			sp->flags |= KGW_SPLICE_F_OVERFLOW;
		kgw_count(KGW_C_SPLICE_OVERFLOW, skb->len);
		return SK_DROP;
	}
	if (first && kgw_notify(cookie, KGW_SPLICE_EVT_HOLD)) {
		kgw_count(KGW_C_SPLICE_EVENT_LOST, skb->len);
		return -1;
	}
	__sync_fetch_and_add(&sp->passed, skb->len);
	kgw_count(KGW_C_SPLICE_HOLD, skb->len);
	return SK_PASS;
}
#endif

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
	struct kgw_splice_peer *sp = kgw_splice_peer.lookup(&cookie);
	if (!sp) {
		kgw_count(KGW_C_SPLICE_PASS, skb->len);
		return SK_PASS;
	}
	u64 pk = sp->peer;
	u32 seq = 0, copied = 0;
	if (kgw_tcp_seqs(skb, &seq, &copied)) {
		/* Where this skb must start: after the last byte handled here (copied_seq
		 * for the first one). copied_seq alone is not enough once bytes are held:
		 * they are consumed when the agent reads them, not here. */
		u32 expected = (sp->flags & KGW_SPLICE_F_SEQ) ? sp->next_seq : copied;
#if KGW_SPLICE_TRIM
		int old = (int)(expected - seq);
		if (old > 0) {
			if (old > (int)skb->len)
				old = skb->len;
			int popped = kgw_pop_head(skb, old);
			kgw_count(KGW_C_SPLICE_TRIM, popped);
			if (popped != old)
				kgw_count(KGW_C_SPLICE_TRIM_FAIL, old - popped);
			if (skb->len == 0)
				return SK_DROP;   /* only old bytes (and maybe the FIN): like the bare FIN */
			seq += popped;
		}
#endif
		sp->next_seq = seq + skb->len;
		sp->flags |= KGW_SPLICE_F_SEQ;
	}
#if KGW_SPLICE_BACKPRESSURE && KGW_SPLICE_BACKLOG_MAX > 0   /* (off: nothing per skb) */
	/* The agent still owes held bytes (has not read and written them all): this skb
	 * would overtake them, so it is held too. Or the peer is not keeping up. */
	int owed = kgw_owes(sp, &cookie);
	if (owed || kgw_peer_backlog(&pk) > KGW_SPLICE_BACKLOG_MAX) {
		int verdict = kgw_hold(skb, cookie, sp, !owed);
		if (verdict >= 0)
			return verdict;
		/* a new hold userspace cannot hear of (ring buffer full): nothing is
		 * owed, so redirecting keeps the order; the next skb tries again */
	}
#endif
	if (kgw_sockhash.sk_redirect_hash(skb, &pk, 0) == SK_PASS) {
		__sync_fetch_and_add(&sp->redirected, skb->len);
		kgw_count(KGW_C_SPLICE_REDIRECT, skb->len);
		return SK_PASS;
	}
#if KGW_SPLICE_BACKPRESSURE && KGW_SPLICE_BACKLOG_MAX > 0
	/* The peer is not in the sockhash (yet): the agent inserts the two sockets one
	 * after the other, and a FIN on the first one runs this program at once
	 * (SO_RCVLOWAT holds back data_ready for bytes, not for a FIN). Hold the skb,
	 * like one the peer cannot take yet: the agent copies it once it hears, and every
	 * skb after it is held until then (kgw_owes), so none overtakes it. Nothing is
	 * owed here (an owed skb was held above), so this hold is a first one. */
	int held = kgw_hold(skb, cookie, sp, 1);
	if (held >= 0)
		return held;
#endif
	kgw_count(KGW_C_SPLICE_DROP, skb->len);
	return SK_DROP;
}
