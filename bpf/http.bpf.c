// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* http probe: socket I/O of selected tasks from the syscall tracepoints.
 *
 * At syscall entry the fd is looked up in the task's file table (CO-RE reads
 * of task->files->fdt->fd[fd]); anything that is not a TCP socket leaves at
 * once, so file I/O costs a few reads. At exit the first bytes the call moved
 * (capture_bytes, default 1 KiB) go to the ring with the socket's identity and
 * its byte offset in that direction, so user space can see holes.
 *
 * Each socket's first message is sniffed (include/sniff.bpf.h): an HTTP/1.x
 * request line or status line, the HTTP/2 client preface or a plausible
 * HTTP/2 frame header keeps it copied; anything else marks it "other" and from then on it
 * costs one map lookup and a byte counter per call (bulk transfers and
 * unknown protocols are not copied). Per-socket state lives in an LRU map:
 * an evicted socket is simply sniffed again at its next message. */
#include "podscope.bpf.h"
#include "sockfd.bpf.h"
#include "sniff.bpf.h"
#include "http.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";


/* Bytes of each message copied (at most HTTP_DATA_MAX), set before load. */
const volatile __u32 capture_bytes = 1024;

#define PROTO_UNKNOWN 0
#define PROTO_HTTP 1
#define PROTO_OTHER 2
#define PROTO_H2 3

struct conn {
	__u64 seq[2]; /* bytes moved so far: [0] tx, [1] rx */
	/* Who last moved bytes on it: the close of a socket released without
	 * close() (at exit) is reported for that task, not for whoever runs
	 * when the kernel destroys the socket (often a softirq). */
	struct event_header owner;
	__u8 proto;
	__u8 tries;   /* messages too short to sniff */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct sock * */
	__type(value, struct conn);
} conns SEC(".maps");

struct call {
	__u64 sk;
	__u64 buf;   /* user buffer, or the iovec array for vectored calls */
	__s32 fd;
	__u8 syscall;
	__u8 vectored;
};

/* In-flight socket calls by thread id; a full map is counted (STAT_MAP_FULL). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct call);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HTTP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} http_stats SEC(".maps");

/* Scratch space for one event: too big for the stack, variable length out.
 * The slack after it lets a copy of up to HTTP_DATA_MAX bytes start at any
 * offset below HTTP_DATA_MAX and stay inside the map value, which is what
 * the verifier can prove when several iovecs are gathered. */
struct scratch_event {
	struct http_event e;
	__u8 slack[HTTP_DATA_MAX];
};

/* One slot per CPU, indexed by the current CPU: a per-CPU array cannot hold
 * values this big (32 KiB limit). User space sets max_entries to the number
 * of possible CPUs before load. Like a per-CPU array, a slot is used by one
 * program run at a time on its CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch_event);
} scratch SEC(".maps");

/* iovecs gathered per vectored call: nginx writes an HTTP/2 frame header and
 * its payload as separate iovecs, several frames per writev; gRPC C-core
 * writes the preface, SETTINGS and the first call's frames in one sendmsg of
 * 27 iovecs (measured, python3-grpcio 1.51). */
#define IOV_GATHER 64

struct http_event _http_event_type = {};

static __always_inline void http_stat_add(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&http_stats, &which);
	if (v)
		*v += n;
}

/* The TCP socket behind fd in the current task, or NULL. */
static __always_inline struct sock *fd_sock(long fd)
{
	return inet_sock_of_fd(fd, IPPROTO_TCP);
}

static __always_inline int enter(long fd, __u64 buf, __u8 syscall, __u8 vectored)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call c = { .buf = buf, .fd = fd, .syscall = syscall, .vectored = vectored };
	struct sock *sk;
	__u64 key;
	struct conn *st;

	if (!should_trace_current())
		return 0;
	sk = fd_sock(fd);
	if (!sk)
		return 0;
	key = (__u64)sk;
	/* Known non-HTTP: count the bytes at exit without copying. */
	st = bpf_map_lookup_elem(&conns, &key);
	if (st && st->proto == PROTO_OTHER)
		c.buf = 0;
	c.sk = key;
	if (bpf_map_update_elem(&calls, &tid, &c, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

static __always_inline void fill_addrs(struct http_event *e, const struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		__builtin_memset(e->saddr, 0, sizeof(e->saddr));
		__builtin_memset(e->daddr, 0, sizeof(e->daddr));
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
}

#define HDR_SIZE __builtin_offsetof(struct http_event, data)

static __always_inline int leave(long ret, __u8 dir)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct call *c;
	struct conn fresh = {}, *st;
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch_event *se;
	struct http_event *e;
	__u64 src = 0, key;
	__u32 n, limit;
	int d = dir == HTTP_DIR_TX ? 0 : 1;

	c = bpf_map_lookup_elem(&calls, &tid);
	if (!c)
		return 0;
	key = c->sk;
	if (ret <= 0)
		goto out;
	st = bpf_map_lookup_elem(&conns, &key);
	if (!st) {
		bpf_map_update_elem(&conns, &key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&conns, &key);
		if (!st)
			goto out;
	}
	if (st->proto == PROTO_OTHER) {
		http_stat_add(HTTP_STAT_OTHER_BYTES, ret);
		goto out;
	}
	se = bpf_map_lookup_elem(&scratch, &cpu);
	if (!se) {
		stat_inc(STAT_MAP_FULL); /* no slot for this CPU: counted, see http.rs */
		goto out;
	}
	e = &se->e;

	limit = ret < capture_bytes ? ret : capture_bytes;
	if (limit > HTTP_DATA_MAX)
		limit = HTTP_DATA_MAX;
	src = c->buf;
	n = 0;
	if (src && !c->vectored) {
		n = limit & (HTTP_DATA_MAX * 2 - 1); /* bounds for the verifier */
		if (n > HTTP_DATA_MAX)
			n = HTTP_DATA_MAX;
		if (n && bpf_probe_read_user(e->data, n, (void *)src))
			n = 0;
	} else if (src) {
		/* The first bytes of the first iovecs, in order, up to limit:
		 * only iovecs the call actually filled or drained are read. */
		/* Unrolled, and with as few branches per iovec as possible:
		 * the verifier cannot prune states whose n differ, so each
		 * branch multiplies its work. */
#pragma unroll
		for (int i = 0; i < IOV_GATHER; i++) {
			struct iovec iov = {};
			__u32 want, off;

			if (n >= limit)
				break;
			if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(src + i * sizeof(iov))))
				break;
			want = limit - n;
			if (iov.iov_len < want)
				want = iov.iov_len;
			want &= HTTP_DATA_MAX * 2 - 1;
			if (want > HTTP_DATA_MAX)
				want = HTTP_DATA_MAX;
			off = n;
			/* Keep the mask: clang drops it (it knows n < limit) and the
			 * verifier then cannot bound the destination. */
			asm volatile("" : "+r"(off));
			off &= HTTP_DATA_MAX - 1;
			/* A zero-length read is allowed and reads nothing. */
			if (bpf_probe_read_user(e->data + off, want, iov.iov_base))
				break;
			n += want;
		}
		if (n > HTTP_DATA_MAX)
			n = HTTP_DATA_MAX;
	}

	if (st->proto == PROTO_UNKNOWN) {
		int p = sniff_proto(e->data, n);

		if (p == SNIFF_HTTP1) {
			st->proto = PROTO_HTTP;
		} else if (p == SNIFF_H2) {
			st->proto = PROTO_H2;
		} else if (p == SNIFF_OTHER || ++st->tries > 8) {
			st->proto = PROTO_OTHER;
			http_stat_add(HTTP_STAT_NOT_HTTP, 1);
			http_stat_add(HTTP_STAT_OTHER_BYTES, ret);
			goto out;
		}
	}

	fill_header(&e->hdr);
	st->owner = e->hdr;
	e->sock = key;
	e->seq = st->seq[d & 1];
	e->len = ret;
	e->captured = n;
	e->fd = c->fd;
	e->kind = HTTP_KIND_DATA;
	e->dir = dir;
	e->syscall = c->syscall;
	e->proto = st->proto == PROTO_H2 ? HTTP_PROTO_H2 : HTTP_PROTO_HTTP1;
	e->_pad2 = 0;
	fill_addrs(e, (const struct sock *)key);
	st->seq[d & 1] += ret;
	output_event(e, HDR_SIZE + n);
out:
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

#define PAIR(name, sysno, dir, fd_arg, buf_arg, vec)                                  \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                   \
	int name##_enter(struct trace_event_raw_sys_enter *ctx)                       \
	{                                                                             \
		return enter(ctx->args[fd_arg], ctx->args[buf_arg], sysno, vec);      \
	}                                                                             \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                    \
	int name##_exit(struct trace_event_raw_sys_exit *ctx)                         \
	{                                                                             \
		return leave(ctx->ret, dir);                                          \
	}

PAIR(read, HTTP_SYS_READ, HTTP_DIR_RX, 0, 1, 0)
PAIR(write, HTTP_SYS_WRITE, HTTP_DIR_TX, 0, 1, 0)
PAIR(readv, HTTP_SYS_READV, HTTP_DIR_RX, 0, 1, 1)
PAIR(writev, HTTP_SYS_WRITEV, HTTP_DIR_TX, 0, 1, 1)
PAIR(sendto, HTTP_SYS_SENDTO, HTTP_DIR_TX, 0, 1, 0)

/* A peek (MSG_PEEK) reads bytes that the next read returns again: not a
 * message of the stream (nginx peeks one byte of each new connection of a
 * TLS listener to tell TLS from plain HTTP). */
#define HTTP_MSG_PEEK 2

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int recvfrom_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[3] & HTTP_MSG_PEEK)
		return 0;
	return enter(ctx->args[0], ctx->args[1], HTTP_SYS_RECVFROM, 0);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int recvfrom_exit(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, HTTP_DIR_RX);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int recvmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[2] & HTTP_MSG_PEEK)
		return 0;
	return enter(ctx->args[0], user_msg_iov(ctx->args[1]), HTTP_SYS_RECVMSG, 1);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int recvmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, HTTP_DIR_RX);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int sendmsg_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx->args[0], user_msg_iov(ctx->args[1]), HTTP_SYS_SENDMSG, 1);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sendmsg_exit(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, HTTP_DIR_TX);
}

/* sendfile(out_fd, in_fd, ...): nginx sends static bodies this way. Only the
 * byte count is known; it keeps the stream offsets right. */
SEC("tracepoint/syscalls/sys_enter_sendfile64")
int sendfile_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter(ctx->args[0], 0, HTTP_SYS_SENDFILE, 0);
}

SEC("tracepoint/syscalls/sys_exit_sendfile64")
int sendfile_exit(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, HTTP_DIR_TX);
}

SEC("tracepoint/syscalls/sys_enter_close")
int close_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct sock *sk;
	struct conn *st;
	struct scratch_event *se;
	struct http_event *e;
	struct file *f;
	__u64 key;

	if (!should_trace_current())
		return 0;
	f = fd_file(ctx->args[0]);
	sk = inet_sock_of_file(f, IPPROTO_TCP);
	if (!sk)
		return 0;
	key = (__u64)sk;
	st = bpf_map_lookup_elem(&conns, &key);
	if (!st)
		return 0;
	/* Not the last reference: the socket stays open (a forking server's
	 * parent closing its copy of the fd its child serves). The last
	 * close, or the socket's destruction, ends the connection. */
	if (file_refs(f) > 1)
		return 0;
	if (st->proto == PROTO_HTTP || st->proto == PROTO_H2) {
		se = bpf_map_lookup_elem(&scratch, &cpu);
		if (se) {
			e = &se->e;
			/* Reported for the task that last moved its bytes, whose
			 * requests these are: the closer can be another process
			 * (the child served it and exited first). */
			if (st->owner.pid) {
				e->hdr = st->owner;
				e->hdr.ts_ns = bpf_ktime_get_ns();
			} else {
				fill_header(&e->hdr);
			}
			e->sock = key;
			e->seq = 0;
			e->len = 0;
			e->captured = 0;
			e->fd = ctx->args[0];
			e->kind = HTTP_KIND_CLOSE;
			e->dir = 0;
			e->syscall = 0;
			e->proto = st->proto == PROTO_H2 ? HTTP_PROTO_H2 : HTTP_PROTO_HTTP1;
			e->_pad2 = 0;
			fill_addrs(e, sk);
			output_event(e, HDR_SIZE);
		}
	}
	bpf_map_delete_elem(&conns, &key);
	return 0;
}

/* A socket closed without close() (exit, or the last reference elsewhere):
 * an HTTP connection's close is reported for the task that last used it
 * (a body that runs until close ends here, and the parser's state goes),
 * then the socket is forgotten, so a new one at the same address is sniffed
 * afresh. Runs in whatever context destroys the socket: no current-task
 * filter; the owner was filtered when it moved bytes. */
SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(http_sock_destroy, struct sock *sk)
{
	__u32 cpu = bpf_get_smp_processor_id();
	__u64 key = (__u64)sk;
	struct scratch_event *se;
	struct http_event *e;
	struct conn *st;

	st = bpf_map_lookup_elem(&conns, &key);
	if (!st)
		return 0;
	if ((st->proto == PROTO_HTTP || st->proto == PROTO_H2) && st->owner.pid) {
		/* This CPU's slot, like every other program here: slot 0 would be
		 * shared with whatever runs on CPU 0 at the same time. */
		se = bpf_map_lookup_elem(&scratch, &cpu);
		if (se) {
			e = &se->e;
			e->hdr = st->owner;
			e->hdr.ts_ns = bpf_ktime_get_ns();
			e->sock = key;
			e->seq = 0;
			e->len = 0;
			e->captured = 0;
			e->fd = -1;
			e->kind = HTTP_KIND_CLOSE;
			e->dir = 0;
			e->syscall = 0;
			e->proto = st->proto == PROTO_H2 ? HTTP_PROTO_H2 : HTTP_PROTO_HTTP1;
			e->_pad2 = 0;
			fill_addrs(e, sk);
			output_event(e, HDR_SIZE);
		}
	}
	bpf_map_delete_elem(&conns, &key);
	return 0;
}
