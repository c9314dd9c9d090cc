// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* tcp probe (tcpconnect + tcpaccept + tcplife + tcpretrans). Sockets are
 * attributed to the task that opened them: connect() and accept() run in the
 * owner's context and record it; later state changes, often in softirq, look
 * the owner up by socket instead of trusting the current task. */
#include "podscope.bpf.h"
#include "tcp.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

#define MSG_PEEK 2

struct sock_owner {
	struct event_header owner;
	__u64 start_ns;
	__u64 tx_bytes; /* payload the owner wrote (sock_sendmsg) */
	__u64 rx_bytes; /* payload the owner read (sock_recvmsg) */
	__u64 closed_ns;  /* when the connection reached CLOSE */
	__s32 error;      /* sk_err at CLOSE */
	__u8 role;
	__u8 announced;   /* connect event sent */
	__u8 last_state;  /* state before CLOSE */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
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
		e = new_event(TCP_KIND_CONNECT, sk, &o->owner);
		if (e) {
			e->role = TCP_ROLE_CLIENT;
			e->state = newstate;
			submit_event(e);
		}
		return 0;
	}

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
		/* Payload as the application saw it. The kernel's bytes_acked and
		 * bytes_received also count SYN and FIN sequence numbers. */
		e->tx_bytes = o->tx_bytes;
		e->rx_bytes = o->rx_bytes;
		e->retransmits = BPF_CORE_READ(tp, total_retrans);
		submit_event(e);
	}
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tcp_send_length, struct sock *sk, int ret, int flags)
{
	__u64 key = (__u64)sk;
	struct sock_owner *o;

	if (ret <= 0)
		return 0;
	o = bpf_map_lookup_elem(&socks, &key);
	if (o)
		__sync_fetch_and_add(&o->tx_bytes, ret);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tcp_recv_length, struct sock *sk, int ret, int flags)
{
	__u64 key = (__u64)sk;
	struct sock_owner *o;

	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	o = bpf_map_lookup_elem(&socks, &key);
	if (o)
		__sync_fetch_and_add(&o->rx_bytes, ret);
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
	cgrp = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
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
