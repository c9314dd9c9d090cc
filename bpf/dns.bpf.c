// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* dns probe: DNS messages of selected tasks from the syscall tracepoints.
 *
 * At syscall entry the fd is looked up in the task's file table (CO-RE, as
 * in the http probe); only UDP and TCP sockets with port 53 at either end go
 * on: a resolver's socket connected to a name server, or a server bound to
 * (or accepted on) 53. At exit the bytes moved (their first DNS_DATA_MAX,
 * gathered over the iovecs of a vectored call) go to the ring. glibc sends
 * the A and AAAA queries of one lookup with one sendmmsg(): its first
 * messages are reported one by one; over TCP (`options use-vc`) it writes
 * both, each after its two-byte length, with one writev of four iovecs. */
#include "podscope.bpf.h"
#include "sockfd.bpf.h"
#include "dns.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define DNS_PORT 53
/* Messages of one sendmmsg() or recvmmsg() reported (glibc sends two); the
 * rest are counted (DNS_STAT_MMSG_NOT_COPIED). */
#define MMSG_MAX 4
/* iovecs gathered per vectored call (glibc's TCP writev has four). */
#define IOV_GATHER 8

struct call {
	__u64 sk;
	__u64 buf;   /* buffer, iovec array (vectored) or mmsghdr array (sendmmsg) */
	__s32 fd;
	__u8 syscall;
	__u8 vectored;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct call);
} calls SEC(".maps");

/* One event being built; the slack after it lets a copy of up to
 * 2 * DNS_DATA_MAX - 1 bytes (the mask) start at any offset below
 * DNS_DATA_MAX and stay inside the value, which is what the verifier can
 * prove when iovecs are gathered: 5.10's loses the tighter clamp to
 * DNS_DATA_MAX when clang spills it to the stack. */
struct scratch_event {
	struct dns_event e;
	__u8 slack[2 * DNS_DATA_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DNS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} dns_stats SEC(".maps");

struct dns_event _dns_event_type = {};

/* The port-53 UDP or TCP socket behind fd in the current task, or NULL. */
static __always_inline struct sock *dns_sock(long fd)
{
	struct sock *sk = inet_sock_of_fd(fd, IPPROTO_UDP);
	__u16 sport, dport;

	if (!sk)
		sk = inet_sock_of_fd(fd, IPPROTO_TCP);
	if (!sk)
		return NULL;
	sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (sport != DNS_PORT && dport != DNS_PORT)
		return NULL;
	return sk;
}

static __always_inline int enter(long fd, __u64 buf, __u8 syscall, __u8 vectored)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call c = { .buf = buf, .fd = fd, .syscall = syscall, .vectored = vectored };
	struct sock *sk;

	if (!should_trace_current())
		return 0;
	sk = dns_sock(fd);
	if (!sk)
		return 0;
	c.sk = (__u64)sk;
	if (bpf_map_update_elem(&calls, &tid, &c, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

static __always_inline void fill_addrs(struct dns_event *e, const struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->transport = BPF_CORE_READ(sk, sk_protocol);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
}

#define HDR_SIZE __builtin_offsetof(struct dns_event, data)

/* The first bytes (up to limit) of the first iovecs at vec, in order, into
 * data: how many were copied. */
static __always_inline __u32 gather(__u8 *data, __u64 vec, __u32 limit)
{
	__u32 n = 0;

#pragma unroll
	for (int i = 0; i < IOV_GATHER; i++) {
		struct iovec iov = {};
		__u32 want, off;

		if (n >= limit)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(vec + i * sizeof(iov))))
			break;
		want = limit - n;
		if (iov.iov_len < want)
			want = iov.iov_len;
		want &= DNS_DATA_MAX * 2 - 1;
		if (want > DNS_DATA_MAX)
			want = DNS_DATA_MAX;
		off = n;
		/* Keep the mask: clang drops it (it knows n < limit) and the
		 * verifier then cannot bound the destination. */
		asm volatile("" : "+r"(off));
		off &= DNS_DATA_MAX - 1;
		if (bpf_probe_read_user(data + off, want, iov.iov_base))
			break;
		n += want;
	}
	return n > DNS_DATA_MAX ? DNS_DATA_MAX : n;
}

/* One message (or, over TCP, one syscall's bytes) of `len` bytes from user
 * memory at src, or from the iovec array at src when vectored. */
static __always_inline void emit(const struct call *c, __u64 src, __u32 len, __u8 dir,
				 __u8 vectored)
{
	__u32 zero = 0;
	struct scratch_event *se = bpf_map_lookup_elem(&scratch, &zero);
	struct dns_event *e;
	__u32 n = len;

	if (!se)
		return;
	e = &se->e;
	if (n > DNS_DATA_MAX)
		n = DNS_DATA_MAX;
	if (!src)
		n = 0;
	if (n && vectored)
		n = gather(e->data, src, n);
	else if (n && bpf_probe_read_user(e->data, n, (void *)src))
		n = 0;
	fill_header(&e->hdr);
	e->sock = c->sk;
	e->len = len;
	e->captured = n;
	e->fd = c->fd;
	e->dir = dir;
	e->syscall = c->syscall;
	fill_addrs(e, (const struct sock *)c->sk);
	output_event(e, HDR_SIZE + n);
}

static __always_inline int leave(long ret, __u8 dir)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &tid);

	if (!c)
		return 0;
	if (ret > 0)
		emit(c, c->buf, ret, dir, c->vectored);
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

#define PAIR(name, sysno, dir, vec)                                                   \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                   \
	int name##_enter(struct trace_event_raw_sys_enter *ctx)                       \
	{                                                                             \
		return enter(ctx->args[0], ctx->args[1], sysno, vec);                 \
	}                                                                             \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                    \
	int name##_exit(struct trace_event_raw_sys_exit *ctx)                         \
	{                                                                             \
		return leave(ctx->ret, dir);                                          \
	}

PAIR(read, DNS_SYS_READ, DNS_DIR_RX, 0)
PAIR(write, DNS_SYS_WRITE, DNS_DIR_TX, 0)
PAIR(readv, DNS_SYS_READV, DNS_DIR_RX, 1)
PAIR(writev, DNS_SYS_WRITEV, DNS_DIR_TX, 1)
PAIR(recvfrom, DNS_SYS_RECVFROM, DNS_DIR_RX, 0)
PAIR(sendto, DNS_SYS_SENDTO, DNS_DIR_TX, 0)

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int recvmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx->args[0], user_msg_iov(ctx->args[1]), DNS_SYS_RECVMSG, 1);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int recvmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, DNS_DIR_RX);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int sendmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx->args[0], user_msg_iov(ctx->args[1]), DNS_SYS_SENDMSG, 1);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sendmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, DNS_DIR_TX);
}

/* sendmmsg and recvmmsg return how many messages went; each mmsghdr holds
 * its length. The first MMSG_MAX are reported, the rest counted. */
static __always_inline int mmsg_leave(long done, __u8 dir)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &tid);
	struct mmsghdr *vec;

	if (!c)
		return 0;
	vec = (struct mmsghdr *)c->buf;
#pragma unroll
	for (int i = 0; i < MMSG_MAX; i++) {
		struct mmsghdr m = {};
		struct iovec iov = {};
		__u32 len;

		if (i >= done)
			break;
		if (bpf_probe_read_user(&m, sizeof(m), &vec[i]))
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), m.msg_hdr.msg_iov))
			iov.iov_base = NULL;
		len = m.msg_len;
		emit(c, (__u64)iov.iov_base, len < iov.iov_len ? len : iov.iov_len, dir, 0);
	}
	if (done > MMSG_MAX) {
		__u32 which = DNS_STAT_MMSG_NOT_COPIED;
		__u64 *v = bpf_map_lookup_elem(&dns_stats, &which);

		if (v)
			*v += done - MMSG_MAX;
	}
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int sendmmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx->args[0], ctx->args[1], DNS_SYS_SENDMMSG, 0);
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int sendmmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	return mmsg_leave(ctx->ret, DNS_DIR_TX);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int recvmmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx->args[0], ctx->args[1], DNS_SYS_RECVMMSG, 0);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int recvmmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	return mmsg_leave(ctx->ret, DNS_DIR_RX);
}
