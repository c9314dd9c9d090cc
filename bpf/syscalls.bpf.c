// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* syscalls probe: raw_syscalls:sys_enter/sys_exit, one program pair for every
 * system call. Entry saves the number, the six arguments, the time and (for
 * calls user space marked) a user string or sockaddr, read while the caller's
 * memory is certainly mapped (execve replaces it before its exit); exit
 * reports the call with its result and duration, or adds it to the
 * per-cgroup totals in summary mode. */
#include "podscope.bpf.h"
#include "syscalls.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Only the numbers marked SC_TRACED in syscall_conf (--syscall). In .bss,
 * not .rodata: user space changes it while the programs run, when a node's
 * sessions widen or narrow what the probe must see. */
volatile bool filter_syscalls = false;
/* Report only calls that returned -errno (decided at exit, in the kernel).
 * Changed live too. */
volatile bool errors_only = false;
/* Aggregate into `totals` instead of streaming events. */
const volatile bool summary = false;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SYSCALL_NR_MAX);
	__type(key, __u32);
	__type(value, struct syscall_conf);
} syscall_conf SEC(".maps");

struct inflight {
	__u64 ts;
	__u64 args[6];
	__u32 nr;
	__u8 str_len;
	__u8 sockaddr_len;
	__u8 sockaddr[SYSCALL_SOCKADDR_MAX];
	char str[SYSCALL_STR_MAX];
};

/* Calls in progress by thread id. A plain hash, not LRU: eviction would lose
 * calls silently; a full map is counted (STAT_MAP_FULL). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* Summary mode needs only the number and the time: a small value keeps the
 * per-call insert and delete cheap. */
struct inflight_small {
	__u64 ts;
	__u32 nr;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct inflight_small);
} inflight_sum SEC(".maps");

/* Entry records are built here: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inflight);
} scratch SEC(".maps");

/* Summary mode: totals since start per (cgroup, syscall), per CPU (no atomics). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct syscall_key);
	__type(value, struct syscall_totals);
} totals SEC(".maps");

static const struct syscall_totals zero_totals = {};

struct syscall_event _syscall_event_type = {};
struct syscall_key _syscall_key_type = {};
struct syscall_totals _syscall_totals_type = {};

static __always_inline struct syscall_conf *conf_of(long nr)
{
	__u32 n = (__u32)nr;

	if (nr < 0 || nr >= SYSCALL_NR_MAX)
		return NULL;
	return bpf_map_lookup_elem(&syscall_conf, &n);
}

/* floor(log2(v)) by halving the search range: six compares, no loop (this
 * runs on every call in summary mode). */
static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xffffffffULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xffff) << 4; v >>= shift; r |= shift;
	shift = (v > 0xff) << 3; v >>= shift; r |= shift;
	shift = (v > 0xf) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r < SYSCALL_HIST_SLOTS ? r : SYSCALL_HIST_SLOTS - 1;
}

static __always_inline void add_total(__u32 nr, long ret, __u64 duration)
{
	struct syscall_key key = { .cgroup_id = bpf_get_current_cgroup_id(), .nr = nr };
	struct syscall_totals *t = bpf_map_lookup_elem(&totals, &key);
	__u32 slot;

	if (!t) {
		if (bpf_map_update_elem(&totals, &key, &zero_totals, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(&totals, &key)) {
			stat_inc(STAT_MAP_FULL);
			return;
		}
		t = bpf_map_lookup_elem(&totals, &key);
		if (!t)
			return;
	}
	t->count++;
	if (ret < 0 && ret >= -4095)
		t->errors++;
	t->total_ns += duration;
	slot = log2_slot(duration);
	if (slot < SYSCALL_HIST_SLOTS)
		t->hist[slot]++;
}

static __always_inline void emit(struct inflight *a, long ret, __u64 now, bool noreturn)
{
	struct syscall_event *e = reserve_event(sizeof(*e));

	if (!e)
		return;
	fill_header(&e->hdr);
	e->hdr.ts_ns = a->ts;
	for (int i = 0; i < 6; i++)
		e->args[i] = a->args[i];
	e->ret = ret;
	e->duration_ns = now - a->ts;
	e->nr = a->nr;
	e->noreturn = noreturn;
	e->str_len = a->str_len;
	e->sockaddr_len = a->sockaddr_len;
	e->pad = 0;
	bpf_probe_read_kernel(e->sockaddr, sizeof(e->sockaddr), a->sockaddr);
	bpf_probe_read_kernel(e->str, sizeof(e->str), a->str);
	submit_event(e);
}

/* Summary mode runs on the BTF-typed raw tracepoints instead: the classic
 * tracepoint builds a perf record of the call for each program run, the raw
 * one hands over its arguments. The call in progress is kept in the task's
 * own storage (Linux 5.11+), a pointer away from the task, instead of a
 * hash keyed by thread id: an insert and a delete per call was most of the
 * probe's cost. Older kernels take the hash pair (user space picks). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inflight_small);
} inflight_task SEC(".maps");

static __always_inline bool summary_wanted(long id)
{
	struct syscall_conf *c;

	if (filter_syscalls) {
		c = conf_of(id);
		if (!c || !(c->flags & SC_TRACED))
			return false;
	}
	return should_trace_current();
}

static __always_inline bool noreturn_call(long id)
{
	struct syscall_conf *c = conf_of(id);

	return c && (c->flags & SC_NORETURN);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(summary_enter, struct pt_regs *regs, long id)
{
	struct inflight_small *sm;

	if (!summary_wanted(id))
		return 0;
	if (noreturn_call(id)) {
		add_total((__u32)id, 0, 0);
		return 0;
	}
	sm = bpf_task_storage_get(&inflight_task, bpf_get_current_task_btf(), 0,
				  BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!sm) {
		stat_inc(STAT_MAP_FULL);
		return 0;
	}
	sm->nr = (__u32)id;
	sm->pad = 1; /* in flight */
	sm->ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(summary_exit, struct pt_regs *regs, long ret)
{
	struct inflight_small *sm;

	sm = bpf_task_storage_get(&inflight_task, bpf_get_current_task_btf(), 0, 0);
	if (!sm || !sm->pad)
		return 0;
	sm->pad = 0;
	add_total(sm->nr, ret, bpf_ktime_get_ns() - sm->ts);
	return 0;
}

/* The same with the hash by thread id, where task storage is missing. */
SEC("tp_btf/sys_enter")
int BPF_PROG(summary_enter_hash, struct pt_regs *regs, long id)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct inflight_small sm;

	if (!summary_wanted(id))
		return 0;
	if (noreturn_call(id)) {
		add_total((__u32)id, 0, 0);
		return 0;
	}
	sm.ts = bpf_ktime_get_ns();
	sm.nr = (__u32)id;
	sm.pad = 0;
	if (bpf_map_update_elem(&inflight_sum, &tid, &sm, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(summary_exit_hash, struct pt_regs *regs, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct inflight_small *sm = bpf_map_lookup_elem(&inflight_sum, &tid);

	if (!sm)
		return 0;
	add_total(sm->nr, ret, bpf_ktime_get_ns() - sm->ts);
	bpf_map_delete_elem(&inflight_sum, &tid);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_enter")
int syscalls_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	long nr = ctx->id;
	struct syscall_conf *c = conf_of(nr);
	struct inflight *a;
	__u32 zero = 0;

	if (filter_syscalls && (!c || !(c->flags & SC_TRACED)))
		return 0;
	if (!should_trace_current())
		return 0;
	if (summary) {
		struct inflight_small sm = { .ts = bpf_ktime_get_ns(), .nr = (__u32)nr };

		if (c && (c->flags & SC_NORETURN))
			add_total(sm.nr, 0, 0);
		else if (bpf_map_update_elem(&inflight_sum, &tid, &sm, BPF_ANY))
			stat_inc(STAT_MAP_FULL);
		return 0;
	}
	a = bpf_map_lookup_elem(&scratch, &zero);
	if (!a)
		return 0;
	a->ts = bpf_ktime_get_ns();
	a->nr = (__u32)nr;
	a->str_len = 0;
	a->sockaddr_len = 0;
	a->str[0] = 0;
	{
		/* Context reads need constant offsets: no loop. */
		a->args[0] = ctx->args[0];
		a->args[1] = ctx->args[1];
		a->args[2] = ctx->args[2];
		a->args[3] = ctx->args[3];
		a->args[4] = ctx->args[4];
		a->args[5] = ctx->args[5];
		if (c) {
			__u32 s = (__u32)c->str_arg - 1;
			__u32 k = (__u32)c->sockaddr_arg - 1;

			if (s < 6) {
				long n = bpf_probe_read_user_str(a->str, sizeof(a->str),
								 (void *)a->args[s]);
				a->str_len = n > 0 ? n : 0;
			}
			if (k < 6 && a->args[k] &&
			    !bpf_probe_read_user(a->sockaddr, sizeof(a->sockaddr), (void *)a->args[k]))
				a->sockaddr_len = sizeof(a->sockaddr);
		}
	}
	if (c && (c->flags & SC_NORETURN)) {
		/* exit/exit_group never reach sys_exit: report them now. */
		if (!errors_only)
			emit(a, 0, a->ts, true);
		return 0;
	}
	if (bpf_map_update_elem(&inflight, &tid, a, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int syscalls_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	long ret = ctx->ret;
	struct inflight *a;
	__u64 now;

	if (summary) {
		struct inflight_small *sm = bpf_map_lookup_elem(&inflight_sum, &tid);

		if (!sm)
			return 0;
		add_total(sm->nr, ret, bpf_ktime_get_ns() - sm->ts);
		bpf_map_delete_elem(&inflight_sum, &tid);
		return 0;
	}
	a = bpf_map_lookup_elem(&inflight, &tid);
	if (!a)
		return 0;
	now = bpf_ktime_get_ns();
	if (!errors_only || (ret < 0 && ret >= -4095))
		emit(a, ret, now, false);
	bpf_map_delete_elem(&inflight, &tid);
	return 0;
}
