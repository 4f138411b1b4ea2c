/* nat.h — connection tracking and full NAT decisions, shared by TC and XDP.
 *
 * kgw_decide() looks the 5-tuple up in the established table, then in the embryonic
 * table; on a miss it matches a frontend, picks a backend with Maglev, allocates a NAT
 * port and inserts the forward and reply entries. It returns a KGW_ACT_* verdict and
 * fills `rw` with the tuple to write; the hook applies it (checksums differ per hook).
 *
 * Concurrency: several CPUs may update one entry at once (both directions of a flow
 * are usually on different CPUs). last_seen_ns, packets, bytes and flags are written
 * without atomics: a lost update costs at most a slightly early or late expiry or a
 * few uncounted packets, and never a wrong rewrite, because the rewrite tuple is
 * written once at insert and never changed. NAT port allocation is race-free: the
 * reply entry is inserted with BPF_NOEXIST and a lost race tries the next port.
 *
 * Reused tuples: a fresh SYN on a closing flow in kgw_ct (quiet for less than half its
 * timeout) whose new decision is the rewrite its entries already hold (same frontend,
 * backend, SNAT address and first NAT port: the usual case with port preservation)
 * re-arms both entries in place as embryonic (KGW_CT_F_EMBRYO: SYN timeout), and the
 * handshake's end clears the flag in place: no delete, insert or table move. It adds
 * no kgw_ct entry, so a SYN flood still only fills kgw_ct_syn. Any other case forgets
 * the old entries and takes the kgw_ct_syn path. The reply entry's owner is decided by
 * a compare-and-swap on its created_ns, which only a re-arm and another flow's
 * takeover of that NAT port write (kgw_ct_claim); a takeover also needs the entry to
 * be KGW_PORT_REUSE_NS old, so it cannot take one a re-arm has just claimed.
 */
#ifndef KGW_NAT_H
#define KGW_NAT_H

#include "kgw_maps.h"
#include "parse.h"
#include "maglev.h"
#include "stats.h"
#include "synlimit.h"

struct kgw_rewrite {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 fe_id; /* the flow's frontend: the hooks count their own drops against it */
};

static __always_inline struct kgw_settings *kgw_get_settings(void)
{
	u32 zero = 0;
	return kgw_settings.lookup(&zero);
}

/* The idle timeout that applies to e now: closing, embryonic (either table) or
 * established. kgw_l4/loader.py expire_flows applies the same rule. */
static __always_inline __u64 kgw_ct_timeout(const struct kgw_ct_entry *e,
					    const struct kgw_settings *s)
{
	if (e->flags & (KGW_CT_F_FIN | KGW_CT_F_RST))
		return s->ct_timeout_closing_ns;
	if (e->flags & (KGW_CT_F_SYN_TBL | KGW_CT_F_EMBRYO))
		return s->ct_timeout_syn_ns;
	return s->ct_timeout_est_ns;
}

/* True when e has seen no packet for more than `quiet` ns. Another CPU may have stored
 * a last_seen_ns later than our `now` (both directions of a flow update one entry's
 * peer concurrently, and each CPU read its clock at a different moment): that entry
 * is fresh, and the u64 subtraction would wrap. */
static __always_inline int kgw_ct_quiet(const struct kgw_ct_entry *e, __u64 now, __u64 quiet)
{
	__u64 seen = e->last_seen_ns;
	return now > seen && now - seen > quiet;
}

static __always_inline int kgw_ct_expired(const struct kgw_ct_entry *e,
					  const struct kgw_settings *s, __u64 now)
{
	return kgw_ct_quiet(e, now, kgw_ct_timeout(e, s));
}

/* True when e has been quiet for more than half its timeout: too close to expiry to be
 * re-armed in place, since the userspace sweep (kgw_l4/loader.py, expire_flows) may
 * have read it as expired and be about to delete it. */
static __always_inline int kgw_ct_stale(const struct kgw_ct_entry *e,
					const struct kgw_settings *s, __u64 now)
{
	return kgw_ct_quiet(e, now, kgw_ct_timeout(e, s) / 2);
}

/* Take ownership of a kgw_ct reply entry whose created_ns was read as `seen_created`:
 * a compare-and-swap to `mark`, so of a re-arm (mark = now) and another flow's
 * takeover of the NAT port (mark = 0) racing on one entry exactly one wins. Nothing
 * else writes created_ns after insert. */
static __always_inline int kgw_ct_claim(struct kgw_ct_entry *r, __u64 seen_created, __u64 mark)
{
	return __sync_val_compare_and_swap(&r->created_ns, seen_created, mark) == seen_created;
}

/* The key under which the opposite direction of `e` (looked up with `k`) is stored. */
static __always_inline void kgw_ct_peer_key(const struct kgw_flow_key *k,
					    const struct kgw_ct_entry *e,
					    struct kgw_flow_key *peer)
{
	peer->saddr = e->new_daddr;
	peer->daddr = e->new_saddr;
	peer->sport = e->new_dport;
	peer->dport = e->new_sport;
	peer->proto = k->proto;
	peer->pad[0] = 0;
	peer->pad[1] = 0;
	peer->pad[2] = 0;
}

/* The entry for the opposite direction of (k, e). */
static __always_inline void kgw_ct_peer_entry(const struct kgw_flow_key *k,
					      const struct kgw_ct_entry *e,
					      struct kgw_ct_entry *peer)
{
	__builtin_memset(peer, 0, sizeof(*peer));
	peer->new_saddr = k->daddr;
	peer->new_daddr = k->saddr;
	peer->new_sport = k->dport;
	peer->new_dport = k->sport;
	peer->fe_id = e->fe_id;
	peer->backend_id = e->backend_id;
	peer->flags = (e->flags & ~(KGW_CT_F_FIN | KGW_CT_F_RST)) ^ KGW_CT_F_REPLY;
	peer->created_ns = e->created_ns;
	peer->last_seen_ns = e->last_seen_ns;
}

static __always_inline void kgw_rewrite_from(struct kgw_rewrite *rw,
					     const struct kgw_ct_entry *e)
{
	rw->saddr = e->new_saddr;
	rw->daddr = e->new_daddr;
	rw->sport = e->new_sport;
	rw->dport = e->new_dport;
	rw->fe_id = e->fe_id;
}

/* Move a flow from the embryonic table to the established one (both entries). */
static __always_inline void kgw_ct_promote(const struct kgw_flow_key *k,
					   struct kgw_ct_entry *e)
{
	struct kgw_flow_key pk;
	struct kgw_ct_entry fwd, rev;

	__builtin_memcpy(&fwd, e, sizeof(fwd));
	fwd.flags &= ~KGW_CT_F_SYN_TBL;
	kgw_ct_peer_key(k, &fwd, &pk);
	kgw_ct_peer_entry(k, &fwd, &rev);
	if (kgw_ct.update(&pk, &rev) != 0 || kgw_ct.update((struct kgw_flow_key *)k, &fwd) != 0) {
		kgw_count(KGW_C_DROP_CT_INSERT, 0);
		return; /* stays embryonic; the next packet tries again */
	}
	kgw_ct_syn.delete(&pk);
	kgw_ct_syn.delete((struct kgw_flow_key *)k);
	kgw_count(KGW_C_CT_PROMOTED, 0);
}

/* End of the handshake of a flow re-armed in place (KGW_CT_F_EMBRYO): clear the flag
 * on both entries, where they are. */
static __always_inline void kgw_ct_promote_in_place(const struct kgw_flow_key *k,
						    struct kgw_ct_entry *e)
{
	struct kgw_flow_key pk;
	kgw_ct_peer_key(k, e, &pk);
	struct kgw_ct_entry *r = kgw_ct.lookup(&pk);
	if (r)
		r->flags &= ~KGW_CT_F_EMBRYO;
	e->flags &= ~KGW_CT_F_EMBRYO;
	kgw_count(KGW_C_CT_PROMOTED, 0);
}

static __always_inline int kgw_frontend(const struct kgw_flow_key *k, __u32 *fe_id)
{
	struct kgw_fe_key fk = {};
	fk.addr = k->daddr;
	fk.port = k->dport;
	fk.proto = k->proto;
	struct kgw_fe_val *fe = kgw_frontends.lookup(&fk);
	if (!fe) {
		__be32 daddr = k->daddr;
		if (!kgw_local_addrs.lookup(&daddr))
			return 0;
		fk.addr = 0;
		fe = kgw_frontends.lookup(&fk);
		if (!fe)
			return 0;
	}
	*fe_id = fe->fe_id;
	return 1;
}

/* True when a socket of this node owns the reply tuple (backend -> snat:port): the
 * node's own connection to that backend from that port (or a listener on it). */
static __always_inline int kgw_port_is_local(void *ctx, const struct kgw_flow_key *rk)
{
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = rk->saddr;
	t.ipv4.daddr = rk->daddr;
	t.ipv4.sport = rk->sport;
	t.ipv4.dport = rk->dport;
	struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* Re-arm the kgw_ct entries of a closing or expired flow (forward entry `old`, key k)
 * for a new connection on the same tuple whose decision `fwd` (first NAT port
 * `port0`) is the rewrite they already hold. Returns 1 when done, 0 when the caller
 * must forget them and take the ordinary new-flow path. */
static __always_inline int kgw_ct_rearm(void *ctx, const struct kgw_flow_key *k,
					struct kgw_ct_entry *old, const struct kgw_ct_entry *fwd,
					__be16 port0, const struct kgw_settings *s, __u64 now)
{
	if (old->fe_id != fwd->fe_id || old->backend_id != fwd->backend_id ||
	    old->new_saddr != fwd->new_saddr || old->new_daddr != fwd->new_daddr ||
	    old->new_dport != fwd->new_dport || old->new_sport != port0 ||
	    (old->flags & (KGW_CT_F_REPLY | KGW_CT_F_SYN_TBL)) || kgw_ct_stale(old, s, now))
		return 0;
	struct kgw_flow_key rk;
	kgw_ct_peer_key(k, old, &rk);
	struct kgw_ct_entry *r = kgw_ct.lookup(&rk);
	if (!r)
		return 0;
	/* It must be old's own reply entry (rewriting back to k) and still ownable. */
	__u64 created = r->created_ns;
	if (created == 0 || !(r->flags & KGW_CT_F_REPLY) || r->new_saddr != k->daddr ||
	    r->new_daddr != k->saddr || r->new_sport != k->dport || r->new_dport != k->sport ||
	    kgw_ct_stale(r, s, now))
		return 0;
	if (kgw_port_is_local(ctx, &rk))
		return 0;
	__u64 mark = now > created ? now : created + 1; /* strictly increasing: no ABA */
	if (!kgw_ct_claim(r, created, mark))
		return 0;
	r->last_seen_ns = now;
	r->packets = 0;
	r->bytes = 0;
	r->flags = KGW_CT_F_REPLY | KGW_CT_F_EMBRYO;
	old->created_ns = mark;
	old->last_seen_ns = now;
	old->packets = 0;
	old->bytes = 0;
	old->flags = KGW_CT_F_EMBRYO;
	return 1;
}

/* Forget both kgw_ct entries of the flow whose forward or reply entry is (k, e). */
static __always_inline void kgw_ct_forget(const struct kgw_flow_key *k,
					  const struct kgw_ct_entry *e)
{
	struct kgw_flow_key pk;
	kgw_ct_peer_key(k, e, &pk);
	kgw_ct.delete(&pk);
	kgw_ct.delete((struct kgw_flow_key *)k);
}

/* New flow to frontend fe_id: pick a backend, allocate a NAT port, insert entries.
 * `old`, when not NULL, is the kgw_ct forward entry of a closing or expired flow on the
 * same tuple (key k): re-armed in place if the decision matches it, else forgotten. */
static __always_inline int kgw_new_flow(void *ctx, struct kgw_pkt *p, __u32 fe_id,
					const struct kgw_settings *s, __u64 now,
					struct kgw_rewrite *rw, struct kgw_ct_entry *old)
{
	struct kgw_flow_key *k = &p->key;
	__u32 bid = kgw_maglev_pick(fe_id, k);
	if (bid >= KGW_MAX_BACKENDS) {
		if (old)
			kgw_ct_forget(k, old);
		kgw_count_drop(KGW_C_DROP_NO_BACKEND, fe_id, p->len);
		return KGW_ACT_DROP;
	}
	struct kgw_backend *be = kgw_backends.lookup(&bid);
	if (!be || be->addr == 0) {
		if (old)
			kgw_ct_forget(k, old);
		kgw_count_drop(KGW_C_DROP_NO_BACKEND, fe_id, p->len);
		return KGW_ACT_DROP;
	}
	int embryonic = k->proto == IPPROTO_TCP;
	__u32 flags = embryonic ? KGW_CT_F_SYN_TBL : 0;

	struct kgw_ct_entry fwd = {};
	fwd.new_saddr = be->snat_addr;
	fwd.new_daddr = be->addr;
	fwd.new_dport = be->port;
	fwd.fe_id = fe_id;
	fwd.backend_id = bid;
	fwd.flags = flags;
	fwd.created_ns = now;
	fwd.last_seen_ns = now;

	__u32 lo = s->nat_port_min, hi = s->nat_port_max;
	if (hi < lo || lo == 0) {
		if (old)
			kgw_ct_forget(k, old);
		kgw_count_drop(KGW_C_DROP_NAT_EXHAUSTED, fe_id, p->len);
		return KGW_ACT_DROP;
	}
	__u32 range = hi - lo + 1;
	/* The first NAT port is the client's own source port when the range allows it
	 * (port preservation), else a function of the client's tuple — never random. A
	 * client that reuses its port then reaches the backend on the same tuple again,
	 * with the same TCP timestamp offset, so the backend's TIME_WAIT accepts the new
	 * SYN as it would without NAT. A random port meets TIME_WAITs of unrelated flows
	 * whose timestamps fail PAWS about half the time: the SYN gets an ACK, the client
	 * a reset and a retry (bench/results/l4.md). */
	__u32 cport = bpf_ntohs(k->sport);
	__u32 start = kgw_jhash_3words(bpf_ntohl(k->saddr), bpf_ntohl(k->daddr),
				       (cport << 16) | bpf_ntohs(k->dport),
				       KGW_NAT_PORT_SEED ^ bid);
	if (cport >= lo && cport <= hi)
		start = cport - lo;
	if (old) {
		if (kgw_ct_rearm(ctx, k, old, &fwd, bpf_htons((__u16)(lo + start % range)), s, now)) {
			kgw_count(KGW_C_NEW_FLOWS, p->len);
			kgw_count_new_flow(fe_id, bid);
			kgw_count_flow(fe_id, bid, KGW_DIR_TO_BACKEND, p->len);
			kgw_rewrite_from(rw, old);
			return KGW_ACT_REWRITE;
		}
		kgw_ct_forget(k, old);
	}
	struct kgw_flow_key rk = {};
	struct kgw_ct_entry rev;
	int found = 0;
	for (int i = 0; i < KGW_NAT_PROBES; i++) {
		fwd.new_sport = bpf_htons((__u16)(lo + (start + i * KGW_NAT_PROBE_STRIDE) % range));
		kgw_ct_peer_key(k, &fwd, &rk);
		if (kgw_port_is_local(ctx, &rk))
			continue;
		struct kgw_ct_entry *cur = kgw_ct.lookup(&rk);
		if (cur) {
			/* In use by another flow to this backend, unless that flow is over:
			 * expired, or closed in both directions (RST, or FIN both ways) and
			 * quiet for KGW_PORT_REUSE_NS — by then the backend's socket is in
			 * TIME_WAIT, which accepts a new SYN on the same tuple. Reusing a port
			 * while only one side has closed would meet a FIN_WAIT socket that
			 * answers the SYN with an ACK. */
			__u64 created = cur->created_ns;
			struct kgw_flow_key ok;
			kgw_ct_peer_key(&rk, cur, &ok);
			if (!kgw_ct_expired(cur, s, now)) {
				struct kgw_ct_entry *fw = kgw_ct.lookup(&ok);
				__u32 fw_flags = fw ? fw->flags : KGW_CT_F_FIN;
				int closed = ((cur->flags | fw_flags) & KGW_CT_F_RST) ||
					     ((cur->flags & KGW_CT_F_FIN) && (fw_flags & KGW_CT_F_FIN));
				__u64 seen = cur->last_seen_ns;
				if (!closed || now < seen || now - seen < KGW_PORT_REUSE_NS)
					continue;
			}
			/* Claim it against a re-arm by its own client (kgw_ct_rearm): a flow
			 * younger than KGW_PORT_REUSE_NS (as a re-arm leaves it) is not taken. */
			if (created == 0 || now < created || now - created < KGW_PORT_REUSE_NS ||
			    !kgw_ct_claim(cur, created, 0))
				continue;
			kgw_ct.delete(&ok);
			kgw_ct.delete(&rk);
		}
		kgw_ct_peer_entry(k, &fwd, &rev);
		if (embryonic) {
			if (kgw_ct_syn.insert(&rk, &rev) != 0)
				continue;
		} else if (kgw_ct.insert(&rk, &rev) != 0) {
			continue;
		}
		found = 1;
		break;
	}
	if (!found) {
		kgw_count_drop(KGW_C_DROP_NAT_EXHAUSTED, fe_id, p->len);
		return KGW_ACT_DROP;
	}
	int err = embryonic ? kgw_ct_syn.update(k, &fwd) : kgw_ct.update(k, &fwd);
	if (err) {
		if (embryonic)
			kgw_ct_syn.delete(&rk);
		else
			kgw_ct.delete(&rk);
		kgw_count_drop(KGW_C_DROP_CT_INSERT, fe_id, p->len);
		return KGW_ACT_DROP;
	}
	kgw_count(KGW_C_NEW_FLOWS, p->len);
	kgw_count_new_flow(fe_id, bid);
	kgw_count_flow(fe_id, bid, KGW_DIR_TO_BACKEND, p->len);
	kgw_rewrite_from(rw, &fwd);
	return KGW_ACT_REWRITE;
}

/* at_xdp: called by the XDP program (1) or the TC one (0); see KGW_SETTINGS_F_XDP. */
static __always_inline int kgw_decide(void *ctx, struct kgw_pkt *p, struct kgw_rewrite *rw,
				      int at_xdp)
{
	struct kgw_flow_key *k = &p->key;
	struct kgw_settings *s = kgw_get_settings();
	if (!s)
		return KGW_ACT_PASS;
	/* The coarse clock (CLOCK_MONOTONIC at tick resolution, no clock-source read): the
	 * timeouts it serves are seconds, the FIB cache's 100 ms, and userspace compares
	 * with the fine CLOCK_MONOTONIC, which is never behind it. */
	__u64 now = bpf_ktime_get_coarse_ns();
	p->now_ns = now;
	int is_tcp = k->proto == IPPROTO_TCP;

	/* A connection attempt to a port with a new-connection rate limit (synlimit.h),
	 * before anything else: an excess SYN costs no table work. With XDP attached the
	 * XDP program alone decides, or a SYN it passes up would pay twice at TC. */
	if (is_tcp && (p->tcp_flags & (KGW_TCP_SYN | KGW_TCP_ACK)) == KGW_TCP_SYN &&
	    (at_xdp || !(s->flags & KGW_SETTINGS_F_XDP)) && !kgw_syn_admit(k, now)) {
		kgw_count(KGW_C_DROP_SYN_RATE, p->len);
		return KGW_ACT_DROP;
	}

	struct kgw_ct_entry *e = kgw_ct.lookup(k);
	if (!e)
		e = kgw_ct_syn.lookup(k);
	struct kgw_ct_entry *old = NULL;
	if (e) {
		/* A fresh SYN on a closing entry is a new connection reusing the tuple. */
		int reused = is_tcp && (p->tcp_flags & (KGW_TCP_SYN | KGW_TCP_ACK)) == KGW_TCP_SYN &&
			     (e->flags & (KGW_CT_F_FIN | KGW_CT_F_RST));
		if (!reused && !kgw_ct_expired(e, s, now)) {
			e->last_seen_ns = now;
			e->packets += 1;
			e->bytes += p->len;
			if (is_tcp && (p->tcp_flags & KGW_TCP_FIN))
				e->flags |= KGW_CT_F_FIN;
			if (is_tcp && (p->tcp_flags & KGW_TCP_RST))
				e->flags |= KGW_CT_F_RST;
			kgw_count(KGW_C_CT_HIT, p->len);
			kgw_count_flow(e->fe_id, e->backend_id, kgw_ct_dir(e->flags), p->len);
			kgw_rewrite_from(rw, e);
			/* The client's first non-SYN packet completes the handshake. */
			if ((e->flags & (KGW_CT_F_SYN_TBL | KGW_CT_F_EMBRYO)) &&
			    !(e->flags & KGW_CT_F_REPLY) &&
			    !(p->tcp_flags & (KGW_TCP_SYN | KGW_TCP_RST))) {
				if (e->flags & KGW_CT_F_SYN_TBL)
					kgw_ct_promote(k, e);
				else
					kgw_ct_promote_in_place(k, e);
			}
			if (p->ip_options)
				kgw_count(KGW_C_IP_OPTIONS, p->len);
			return KGW_ACT_REWRITE;
		}
		/* Expired or reused: forget both directions (a SYN on kgw_ct entries may
		 * re-arm them instead, in kgw_new_flow), then treat the packet as new. */
		kgw_count(KGW_C_CT_EXPIRED, 0);
		if (is_tcp && !(e->flags & KGW_CT_F_SYN_TBL) &&
		    (p->tcp_flags & (KGW_TCP_SYN | KGW_TCP_ACK | KGW_TCP_RST | KGW_TCP_FIN)) ==
			    KGW_TCP_SYN) {
			old = e;
		} else {
			struct kgw_flow_key pk;
			kgw_ct_peer_key(k, e, &pk);
			if (e->flags & KGW_CT_F_SYN_TBL) {
				kgw_ct_syn.delete(&pk);
				kgw_ct_syn.delete(k);
			} else {
				kgw_ct.delete(&pk);
				kgw_ct.delete(k);
			}
		}
	}

	__u32 fe_id;
	if (!kgw_frontend(k, &fe_id)) {
		if (old)
			kgw_ct_forget(k, old);
		return KGW_ACT_PASS;
	}
	kgw_count(KGW_C_CT_MISS, p->len);
	if (p->ip_options)
		kgw_count(KGW_C_IP_OPTIONS, p->len);
	/* Only a SYN may start a TCP flow: anything else belongs to a flow we do not
	 * know (lost entry, scan, spoof) and a backend would answer it with a reset. */
	if (is_tcp && (p->tcp_flags & (KGW_TCP_SYN | KGW_TCP_ACK | KGW_TCP_RST | KGW_TCP_FIN)) !=
			      KGW_TCP_SYN) {
		kgw_count_drop(KGW_C_DROP_NOT_SYN, fe_id, p->len);
		return KGW_ACT_DROP;
	}
	return kgw_new_flow(ctx, p, fe_id, s, now, rw, old);
}

#endif
