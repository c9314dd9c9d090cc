// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* tcp probe (tcpconnect + tcpaccept + tcplife + tcpretrans). Sockets are
 * attributed to the task that opened them: connect() and accept() run in the
 * owner's context and record it; later state changes, often in softirq, look
 * the owner up by socket instead of trusting the current task.
 *
 * Bytes come from the socket's own sequence accounting when it is destroyed,
 * not from per-call hooks: every path the application moves data through
 * (send/recv, writev, sendfile, splice, zero-copy) advances write_seq and
 * copied_seq, and the tracepoints this needs exist on every kernel since 4.16,
 * where sock_send_length/sock_recv_length (6.3+) do not. See tcp_bytes(). */
#include "podscope.bpf.h"
#include "tcp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

struct sock_owner {
	struct event_header owner;
	__u64 start_ns;
	__u64 tx_base;    /* send sequence space used before the owner could write (the SYN) */
	__u64 closed_ns;  /* when the connection reached CLOSE */
	__s32 error;      /* sk_err at CLOSE */
	__u8 role;
	__u8 announced;   /* connect event sent */
	__u8 last_state;  /* state before CLOSE */
	__u8 fin_sent;    /* our FIN was queued: it takes one sequence number */
};

/* Sockets being followed. A plain hash map, not LRU: an LRU map evicts live
 * connections without telling (their close would never be reported); a full
 * map is counted (STAT_MAP_FULL). Every tracked socket leaves it: at CLOSE
 * from SYN_SENT or when destroyed. Allocated on demand: 65,536 preallocated
 * entries would pin ~7 MB of kernel memory per tracer. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64); /* struct sock * */
	__type(value, struct sock_owner);
} socks SEC(".maps");

struct tcp_event _tcp_event_type = {};

static __always_inline void fill_addrs(struct tcp_event *e, const struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	/* inet_sport survives unhashing; skc_num is zeroed before CLOSE is traced. */
	e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
}

static __always_inline struct tcp_event *new_event(__u8 kind, const struct sock *sk,
						   const struct event_header *owner)
{
	struct tcp_event *e = reserve_event(sizeof(*e));
	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	if (owner)
		e->hdr = *owner;
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	fill_addrs(e, sk);
	return e;
}

/* Send sequence space queued so far, in 64 bits: acknowledged (bytes_acked
 * is a u64 counter) plus what is still unacknowledged (small, fits u32). */
static __always_inline __u64 tx_space(const struct sock *sk)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u32 unacked = BPF_CORE_READ(tp, write_seq) - BPF_CORE_READ(tp, snd_una);

	return BPF_CORE_READ(tp, bytes_acked) + unacked;
}

/* Payload the owner wrote and read over the connection's life, read when it
 * is destroyed (nothing can move after that).
 * - sent: the send sequence space minus what was used before the owner
 *   could write (tx_base: the SYN, measured at connect/accept) and minus our
 *   FIN if one was queued;
 * - read: the peer's sequence space received (bytes_received, u64; counts a
 *   FIN) minus what was never read (rcv_nxt - copied_seq); a FIN counts in
 *   copied_seq only when the owner read the end of the stream, which is the
 *   case if a FIN arrived (SOCK_DONE, set only by tcp_fin) and nothing is
 *   left unread. */
static __always_inline void tcp_bytes(const struct sock *sk, const struct sock_owner *o,
				      __u64 *tx, __u64 *rx)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u64 space = tx_space(sk) - o->tx_base;
	__u64 received = BPF_CORE_READ(tp, bytes_received);
	__u32 unread = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	bool fin_received = flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE));

	if (o->fin_sent && space > 0)
		space -= 1;
	*tx = space;
	if (received < unread) {
		*rx = 0;
		return;
	}
	received -= unread;
	if (fin_received && unread == 0 && received > 0)
		received -= 1;
	*rx = received;
}

static __always_inline bool is_tcp(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline void track(const struct sock *sk, __u8 role, __u8 announced)
{
	__u64 key = (__u64)sk;
	struct sock_owner o = {};

	fill_header(&o.owner);
	o.start_ns = o.owner.ts_ns;
	o.role = role;
	o.announced = announced;
	/* accept(): the connection is established and the owner has not written
	 * yet. connect(): measured again when it is established. */
	o.tx_base = tx_space(sk);
	if (bpf_map_update_elem(&socks, &key, &o, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_state, const struct sock *sk, const int oldstate, const int newstate)
{
	__u64 key = (__u64)sk;
	struct sock_owner *o;
	struct tcp_event *e;

	if (!is_tcp(sk))
		return 0;

	/* connect() in the caller's context: remember who, report once established
	 * (the source port is not chosen yet at this point). */
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (should_trace_current())
			track(sk, TCP_ROLE_CLIENT, 0);
		return 0;
	}

	o = bpf_map_lookup_elem(&socks, &key);
	if (!o)
		return 0;

	if (oldstate == TCP_SYN_SENT && newstate == TCP_ESTABLISHED && !o->announced) {
		o->announced = 1;
		o->tx_base = tx_space(sk);
		e = new_event(TCP_KIND_CONNECT, sk, &o->owner);
		if (e) {
			e->role = TCP_ROLE_CLIENT;
			e->state = newstate;
			submit_event(e);
		}
		return 0;
	}

	/* close()/shutdown() queued our FIN (tcp_close_state, then tcp_send_fin). */
	if (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK)
		o->fin_sent = 1;
	if (newstate != TCP_CLOSE)
		return 0;

	if (oldstate == TCP_SYN_SENT) {
		e = new_event(TCP_KIND_CONNECT_FAILED, sk, &o->owner);
		if (e) {
			e->role = o->role;
			e->state = oldstate;
			e->error = BPF_CORE_READ(sk, sk_err);
			e->duration_ns = e->hdr.ts_ns - o->start_ns;
			submit_event(e);
		}
		bpf_map_delete_elem(&socks, &key);
		return 0;
	}
	/* The connection is over, but the owner may still read what is queued
	 * (TIME_WAIT hands over before the application has read the peer's last
	 * data): report when the socket is destroyed, with complete counts. */
	o->closed_ns = bpf_ktime_get_ns();
	o->last_state = oldstate;
	o->error = BPF_CORE_READ(sk, sk_err);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tcp_destroy, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_owner *o = bpf_map_lookup_elem(&socks, &key);
	struct tcp_event *e;

	if (!o)
		return 0;
	e = new_event(TCP_KIND_CLOSE, sk, &o->owner);
	if (e) {
		const struct tcp_sock *tp = (const struct tcp_sock *)sk;

		e->role = o->role;
		e->state = o->closed_ns ? o->last_state : BPF_CORE_READ(sk, __sk_common.skc_state);
		e->error = o->error;
		e->duration_ns = (o->closed_ns ? o->closed_ns : e->hdr.ts_ns) - o->start_ns;
		tcp_bytes(sk, o, &e->tx_bytes, &e->rx_bytes);
		e->retransmits = BPF_CORE_READ(tp, total_retrans);
		submit_event(e);
	}
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

/* accept() returned fd: find its socket in the caller's fd table. */
static __always_inline int accepted(long fd)
{
	struct task_struct *task;
	struct file **fds;
	struct file *f = NULL;
	struct socket *sock;
	struct sock *sk;
	struct tcp_event *e;
	__u64 key;
	struct sock_owner *o;

	if (fd < 0 || !should_trace_current())
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_core_read(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || !is_tcp(sk))
		return 0;
	track(sk, TCP_ROLE_SERVER, 1);
	key = (__u64)sk;
	o = bpf_map_lookup_elem(&socks, &key);
	if (!o)
		return 0;
	e = new_event(TCP_KIND_ACCEPT, sk, &o->owner);
	if (e) {
		e->role = TCP_ROLE_SERVER;
		submit_event(e);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int accept4_exit(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int accept_exit(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

/* Linux < 5.15 packed the cgroup pointer into sock_cgroup_data.val (low
 * bits set: classid/prioidx mode, where the cgroup is the root). */
struct sock_cgroup_data___old {
	__u64 val;
} __attribute__((preserve_access_index));

static __always_inline struct cgroup *sock_cgroup(const struct sock *sk)
{
	__u64 val;

	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	val = BPF_CORE_READ((struct sock_cgroup_data___old *)&sk->sk_cgrp_data, val);
	return (val & 3) ? NULL : (struct cgroup *)val;
}

/* Retransmits and resets: owner from our map, else the socket's cgroup. */
static __always_inline int sock_event(__u8 kind, const struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_owner *o;
	struct tcp_event *e;
	struct cgroup *cgrp;

	if (!sk)
		return 0;
	o = bpf_map_lookup_elem(&socks, &key);
	if (o) {
		e = new_event(kind, sk, &o->owner);
		if (e) {
			e->role = o->role;
			submit_event(e);
		}
		return 0;
	}
	if (filter_by_pid || filter_by_comm)
		return 0; /* no owner known: cannot tell */
	cgrp = sock_cgroup(sk);
	if (!cgroup_ptr_allowed(cgrp))
		return 0;
	e = new_event(kind, sk, NULL);
	if (e) {
		e->hdr.cgroup_id = cgroup_ptr_id(cgrp);
		submit_event(e);
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit, const struct sock *sk)
{
	struct trace_event_raw_tcp_retransmit_skb *has_err = NULL;

	/* Since Linux 6.13 the tracepoint fires for failed retransmits too,
	 * with their error (-EBUSY while the skb is still queued below, -EPERM
	 * when netfilter dropped it, ...): only a retransmit that went out is
	 * one, as the socket's total_retrans and the RetransSegs MIB count. On
	 * older kernels it fires only for those (the branch is removed at
	 * load: the field does not exist there). */
	if (bpf_core_field_exists(has_err->err) && (int)ctx[2] != 0)
		return 0;
	return sock_event(TCP_KIND_RETRANSMIT, sk);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tcp_send_reset, const struct sock *sk)
{
	return sock_event(TCP_KIND_RESET_SENT, sk);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tcp_receive_reset, struct sock *sk)
{
	return sock_event(TCP_KIND_RESET_RECEIVED, sk);
}
