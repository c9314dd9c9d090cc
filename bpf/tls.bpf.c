// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* tls probe: plaintext of OpenSSL (libssl 1.1 and 3.x) from uprobes on
 * SSL_read, SSL_write, SSL_read_ex, SSL_write_ex (entry and return).
 *
 * User space attaches these programs to each distinct libssl file the
 * selected processes map (pid -1: every mapper of that file hits them), so
 * the pod filter below is what keeps other processes out.
 *
 * Which socket: while a thread is inside an SSL call, the read/write
 * syscall it makes on the socket names the fd ("nested syscall"); the
 * syscall tracepoints here record it into the thread's in-flight call.
 * When OpenSSL answers from its own buffer without a syscall, the socket
 * this SSL* used last is taken, and failing that the thread's last TLS
 * socket (counted separately: it can be wrong for a thread serving many
 * connections). SSL_do_handshake is hooked too, only to learn the SSL* ->
 * socket pairing early.
 *
 * Each connection's first plaintext message is sniffed for HTTP/1.x and
 * HTTP/2 (sniff.bpf.h, shared with the http probe), except on port 853, DNS
 * over TLS, which is copied as the DNS-over-TCP stream it is: anything else
 * stops being copied and only costs a byte counter. */
#include "podscope.bpf.h"
#include "sockfd.bpf.h"
#include "sniff.bpf.h"
#include "tls.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Bytes of each call's plaintext copied (at most TLS_DATA_MAX), set before load. */
const volatile __u32 capture_bytes = 1024;

#define PROTO_UNKNOWN 0
#define PROTO_HTTP 1
#define PROTO_OTHER 2
#define PROTO_H2 3
#define PROTO_DNS 4

/* DNS over TLS (RFC 7858). */
#define DOT_PORT 853

struct conn {
	__u64 seq[2]; /* plaintext bytes so far: [0] tx, [1] rx */
	__u8 proto;
	__u8 tries;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct sock * */
	__type(value, struct conn);
} tls_conns SEC(".maps");

struct call {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; /* _ex: where the byte count is written */
	__u64 sk;      /* set by the first socket syscall inside the call */
	__s32 fd;
	__u8 fn;
	__u8 dir;
};

/* In-flight SSL calls by thread id. LRU: a thread that dies inside a call
 * leaves no entry behind for long. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct call);
} tls_calls SEC(".maps");

struct sockref {
	__u64 sk;
	__s32 fd;
	__u32 _pad;
};

/* The socket each SSL* was last seen using. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* SSL * (with the tgid: pointers are per process) */
	__type(value, struct sockref);
} tls_ssl_sock SEC(".maps");

/* Each thread's last TLS socket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct sockref);
} tls_thread_sock SEC(".maps");

/* Selected processes that exec'ed: user space scans their maps for libssl
 * and deletes the entry. Value: when (bpf_ktime_get_ns). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} tls_execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tls_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tls_event);
} tls_scratch SEC(".maps");

struct tls_event _tls_event_type = {};

static __always_inline void tls_stat_add(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&tls_stats, &which);
	if (v)
		*v += n;
}

static __always_inline __u64 ssl_key(__u64 ssl)
{
	/* SSL* values of two processes can be equal; mix in the tgid. */
	return ssl ^ ((bpf_get_current_pid_tgid() >> 32) << 48);
}

static __always_inline int ssl_enter(__u64 ssl, __u64 buf, __u64 len_ptr, __u8 fn, __u8 dir)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call c = { .ssl = ssl, .buf = buf, .len_ptr = len_ptr, .fd = -1, .fn = fn, .dir = dir };

	struct call *outer;

	if (!should_trace_current())
		return 0;
	/* A handshake run from inside SSL_read/SSL_write belongs to that call. */
	outer = bpf_map_lookup_elem(&tls_calls, &tid);
	if (fn == TLS_FN_HANDSHAKE && outer && outer->fn != TLS_FN_HANDSHAKE)
		return 0;
	if (bpf_map_update_elem(&tls_calls, &tid, &c, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

static __always_inline void tls_fill_addrs(struct tls_event *e, const struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
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

/* Either end on port 853: DNS over TLS. */
static __always_inline bool is_dot(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_num) == DOT_PORT ||
	       BPF_CORE_READ(sk, __sk_common.skc_dport) == bpf_htons(DOT_PORT);
}

#define HDR_SIZE __builtin_offsetof(struct tls_event, data)

/* A call ends: its plaintext (ret bytes, or the _ex count) is reported on
 * its socket. The caller deletes the call. */
static __always_inline void call_done(struct call *c, long ret, __u32 tid)
{
	__u32 zero = 0;
	struct conn fresh = {}, *st;
	struct tls_event *e;
	struct sockref ref = {}, *known;
	__u64 key, sslk, moved = 0;
	__u32 n;
	__u8 source;
	int d;

	sslk = ssl_key(c->ssl);
	if (c->sk) {
		ref.sk = c->sk;
		ref.fd = c->fd;
		source = c->fn == TLS_FN_GO_READ || c->fn == TLS_FN_GO_WRITE ? TLS_STAT_FD_GO
									      : TLS_STAT_FD_SYSCALL;
		bpf_map_update_elem(&tls_ssl_sock, &sslk, &ref, BPF_ANY);
		bpf_map_update_elem(&tls_thread_sock, &tid, &ref, BPF_ANY);
	} else if ((known = bpf_map_lookup_elem(&tls_ssl_sock, &sslk))) {
		ref = *known;
		source = TLS_STAT_FD_SSL;
	} else if ((known = bpf_map_lookup_elem(&tls_thread_sock, &tid))) {
		ref = *known;
		source = TLS_STAT_FD_THREAD;
	} else {
		source = TLS_STAT_NO_SOCKET;
	}
	if (c->fn == TLS_FN_HANDSHAKE)
		goto out;

	/* How many plaintext bytes moved. */
	if (c->fn == TLS_FN_SSL_READ_EX || c->fn == TLS_FN_SSL_WRITE_EX) {
		if (ret != 1 || !c->len_ptr ||
		    bpf_probe_read_user(&moved, sizeof(moved), (void *)c->len_ptr))
			goto out;
	} else {
		if (ret <= 0)
			goto out;
		moved = ret;
	}
	if (!moved)
		goto out;
	tls_stat_add(source, 1);
	if (source == TLS_STAT_NO_SOCKET)
		goto out;
	key = ref.sk;
	d = c->dir == TLS_DIR_TX ? 0 : 1;

	st = bpf_map_lookup_elem(&tls_conns, &key);
	if (!st) {
		bpf_map_update_elem(&tls_conns, &key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&tls_conns, &key);
		if (!st)
			goto out;
	}
	if (st->proto == PROTO_OTHER) {
		tls_stat_add(TLS_STAT_OTHER_BYTES, moved);
		goto out;
	}
	e = bpf_map_lookup_elem(&tls_scratch, &zero);
	if (!e)
		goto out;
	n = moved < capture_bytes ? moved : capture_bytes;
	if (n > TLS_DATA_MAX)
		n = TLS_DATA_MAX;
	n &= TLS_DATA_MAX * 2 - 1;
	if (n > TLS_DATA_MAX)
		n = TLS_DATA_MAX;
	if (n && bpf_probe_read_user(e->data, n, (void *)c->buf))
		n = 0;

	if (st->proto == PROTO_UNKNOWN && is_dot((const struct sock *)key)) {
		/* DNS over TLS is known by its port: its messages (a length,
		 * then the message) have no mark a sniff could trust. */
		st->proto = PROTO_DNS;
	} else if (st->proto == PROTO_UNKNOWN) {
		int p = sniff_proto(e->data, n);

		if (p == SNIFF_HTTP1) {
			st->proto = PROTO_HTTP;
		} else if (p == SNIFF_H2) {
			st->proto = PROTO_H2;
		} else if (p == SNIFF_OTHER || ++st->tries > 8) {
			st->proto = PROTO_OTHER;
			tls_stat_add(TLS_STAT_NOT_HTTP, 1);
			tls_stat_add(TLS_STAT_OTHER_BYTES, moved);
			goto out;
		}
	}

	fill_header(&e->hdr);
	e->sock = key;
	e->seq = st->seq[d & 1];
	e->len = moved;
	e->captured = n;
	e->fd = ref.fd;
	e->kind = TLS_KIND_DATA;
	e->dir = c->dir;
	e->fn = c->fn;
	e->fd_source = source;
	e->proto = st->proto == PROTO_H2    ? TLS_PROTO_H2
		   : st->proto == PROTO_DNS ? TLS_PROTO_DNS
					    : TLS_PROTO_HTTP1;
	e->_pad2 = 0;
	tls_fill_addrs(e, (const struct sock *)key);
	st->seq[d & 1] += moved;
	output_event(e, HDR_SIZE + n);
out:
	return;
}

static __always_inline int ssl_leave(long ret, __u8 fn)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&tls_calls, &tid);

	if (!c || c->fn != fn)
		return 0; /* not ours: a nested handshake's return leaves the outer call */
	call_done(c, ret, tid);
	bpf_map_delete_elem(&tls_calls, &tid);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(ssl_read_enter, void *ssl, void *buf, int num)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, TLS_FN_SSL_READ, TLS_DIR_RX);
}

SEC("uprobe")
int BPF_UPROBE(ssl_write_enter, void *ssl, const void *buf, int num)
{
	return ssl_enter((__u64)ssl, (__u64)buf, 0, TLS_FN_SSL_WRITE, TLS_DIR_TX);
}

SEC("uprobe")
int BPF_UPROBE(ssl_read_ex_enter, void *ssl, void *buf, __u64 num, __u64 *readbytes)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, TLS_FN_SSL_READ_EX, TLS_DIR_RX);
}

SEC("uprobe")
int BPF_UPROBE(ssl_write_ex_enter, void *ssl, const void *buf, __u64 num, __u64 *written)
{
	return ssl_enter((__u64)ssl, (__u64)buf, (__u64)written, TLS_FN_SSL_WRITE_EX, TLS_DIR_TX);
}

SEC("uprobe")
int BPF_UPROBE(ssl_handshake_enter, void *ssl)
{
	return ssl_enter((__u64)ssl, 0, 0, TLS_FN_HANDSHAKE, 0);
}

#define RET(name, fn)                                 \
	SEC("uretprobe")                              \
	int BPF_URETPROBE(name, long ret)             \
	{                                             \
		return ssl_leave((int)ret, fn);       \
	}

RET(ssl_read_ret, TLS_FN_SSL_READ)
RET(ssl_write_ret, TLS_FN_SSL_WRITE)
RET(ssl_read_ex_ret, TLS_FN_SSL_READ_EX)
RET(ssl_write_ex_ret, TLS_FN_SSL_WRITE_EX)
RET(ssl_handshake_ret, TLS_FN_HANDSHAKE)

/* Go's crypto/tls: (*Conn).Read probed at entry and at each RET of the
 * function (user space finds them by disassembling it: a uretprobe would
 * break when Go moves the goroutine's stack); (*Conn).Write at entry. Go >= 1.17's
 * register ABI: the receiver and the slice's pointer and length in the
 * first three integer registers, the result n in the first, the running
 * goroutine's g in a register of its own. A goroutine can move to another
 * thread while it waits inside Read, so calls are keyed by g, not by
 * thread. */
#if defined(__TARGET_ARCH_x86)
#define GO_ARG1(x) ((x)->ax)
#define GO_ARG2(x) ((x)->bx)
#define GO_ARG3(x) ((x)->cx)
#define GO_G(x) ((x)->r14)
#elif defined(__TARGET_ARCH_arm64)
#define GO_ARG1(x) (((const struct user_pt_regs *)(x))->regs[0])
#define GO_ARG2(x) (((const struct user_pt_regs *)(x))->regs[1])
#define GO_ARG3(x) (((const struct user_pt_regs *)(x))->regs[2])
#define GO_G(x) (((const struct user_pt_regs *)(x))->regs[28])
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); /* g, with the tgid mixed in */
	__type(value, struct call);
} tls_go_calls SEC(".maps");

/* The descriptor under a *tls.Conn: its first field, conn net.Conn (an
 * interface: type word, then data), holds a *net.TCPConn, whose first
 * word is its *netFD, whose poll.FD has Sysfd after its 16-byte fdMutex.
 * Stable since Go 1.9; anything else reads as no socket. */
static __always_inline long go_conn_fd(__u64 conn)
{
	__u64 data = 0, netfd = 0;
	__s64 fd = -1;

	if (bpf_probe_read_user(&data, sizeof(data), (void *)(conn + 8)) || !data)
		return -1;
	if (bpf_probe_read_user(&netfd, sizeof(netfd), (void *)data) || !netfd)
		return -1;
	if (bpf_probe_read_user(&fd, sizeof(fd), (void *)(netfd + 16)))
		return -1;
	return fd;
}

/* A call of either function as the rest of the probe keeps it: the
 * connection, the buffer, and the socket under the connection. */
static __always_inline void go_call(struct pt_regs *ctx, struct call *c, __u8 fn, __u8 dir)
{
	struct sock *sk;
	long fd;

	c->ssl = GO_ARG1(ctx);
	c->buf = GO_ARG2(ctx);
	c->fd = -1;
	c->fn = fn;
	c->dir = dir;
	fd = go_conn_fd(c->ssl);
	if (fd >= 0 && fd < 1 << 20) {
		sk = inet_sock_of_fd(fd, IPPROTO_TCP);
		if (sk) {
			c->sk = (__u64)sk;
			c->fd = fd;
		}
	}
}

SEC("uprobe")
int go_tls_read_enter(struct pt_regs *ctx)
{
	__u64 key = ssl_key(GO_G(ctx));
	struct call c = {};

	if (!should_trace_current())
		return 0;
	go_call(ctx, &c, TLS_FN_GO_READ, TLS_DIR_RX);
	if (bpf_map_update_elem(&tls_go_calls, &key, &c, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

/* Write is reported at its entry, the whole buffer (it writes all of it
 * or fails): a goroutine can be descheduled between the write and the
 * function's return, and the peer's answer would then seem to come before
 * the request was sent. */
SEC("uprobe")
int go_tls_write_enter(struct pt_regs *ctx)
{
	struct call c = {};

	if (!should_trace_current())
		return 0;
	go_call(ctx, &c, TLS_FN_GO_WRITE, TLS_DIR_TX);
	call_done(&c, (long)GO_ARG3(ctx), (__u32)bpf_get_current_pid_tgid());
	return 0;
}

/* At a RET of Read: n in the first result register. */
SEC("uprobe")
int go_tls_ret(struct pt_regs *ctx)
{
	__u64 key = ssl_key(GO_G(ctx));
	struct call *c = bpf_map_lookup_elem(&tls_go_calls, &key);

	if (!c)
		return 0;
	call_done(c, (long)GO_ARG1(ctx), (__u32)bpf_get_current_pid_tgid());
	bpf_map_delete_elem(&tls_go_calls, &key);
	return 0;
}

/* A socket syscall inside an SSL call: that is the call's socket. */
static __always_inline int nested(long fd)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&tls_calls, &tid);
	struct sock *sk;

	if (!c || c->sk)
		return 0;
	sk = inet_sock_of_fd(fd, IPPROTO_TCP);
	if (!sk)
		return 0;
	c->sk = (__u64)sk;
	c->fd = fd;
	return 0;
}

#define NESTED(name)                                                \
	SEC("tracepoint/syscalls/sys_enter_" #name)                 \
	int tls_##name##_enter(struct trace_event_raw_sys_enter *ctx) \
	{                                                           \
		return nested(ctx->args[0]);                        \
	}

NESTED(read)
NESTED(write)
NESTED(readv)
NESTED(writev)
NESTED(recvfrom)
NESTED(sendto)
NESTED(recvmsg)
NESTED(sendmsg)

SEC("tracepoint/syscalls/sys_enter_close")
int tls_close_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;
	struct sock *sk;
	struct conn *st;
	struct tls_event *e;
	struct file *f;
	__u64 key;

	if (!should_trace_current())
		return 0;
	f = fd_file(ctx->args[0]);
	sk = inet_sock_of_file(f, IPPROTO_TCP);
	if (!sk)
		return 0;
	key = (__u64)sk;
	st = bpf_map_lookup_elem(&tls_conns, &key);
	if (!st)
		return 0;
	/* Not the socket's last close (another fd or process still has it). */
	if (file_refs(f) > 1)
		return 0;
	if (st->proto == PROTO_HTTP || st->proto == PROTO_H2) {
		e = bpf_map_lookup_elem(&tls_scratch, &zero);
		if (e) {
			fill_header(&e->hdr);
			e->sock = key;
			e->seq = 0;
			e->len = 0;
			e->captured = 0;
			e->fd = ctx->args[0];
			e->kind = TLS_KIND_CLOSE;
			e->dir = 0;
			e->fn = 0;
			e->fd_source = 0;
			e->proto = st->proto == PROTO_H2 ? TLS_PROTO_H2 : TLS_PROTO_HTTP1;
			e->_pad2 = 0;
			tls_fill_addrs(e, sk);
			output_event(e, HDR_SIZE);
		}
	}
	bpf_map_delete_elem(&tls_conns, &key);
	return 0;
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tls_sock_destroy, struct sock *sk)
{
	__u64 key = (__u64)sk;

	bpf_map_delete_elem(&tls_conns, &key);
	return 0;
}

/* A selected process exec'ed: its libraries are mapped right after, so
 * user space scans its maps for libssl soon (and again a little later). */
SEC("tracepoint/sched/sched_process_exec")
int tls_exec(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 now = bpf_ktime_get_ns();

	if (!should_trace_current())
		return 0;
	if (bpf_map_update_elem(&tls_execs, &pid, &now, BPF_ANY))
		tls_stat_add(TLS_STAT_EXEC_FULL, 1);
	return 0;
}
