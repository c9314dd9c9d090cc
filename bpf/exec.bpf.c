// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* exec probe (execsnoop): successful execs from sched_process_exec, where the
 * new argv is already on the new stack; failed ones from the syscall exit,
 * where the caller's argv is still mapped. */
#include "podscope.bpf.h"
#include "exec.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct exec_args {
	const char *filename;
	const char *const *argv;
};

/* In-flight execve calls of selected tasks, keyed by thread id. A plain hash
 * map: an LRU one would evict live entries without telling (a failed exec
 * would vanish); a full map is counted instead. A thread that execs takes the
 * process's tid, so a successful exec removes the entry of its old tid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct exec_args);
} inflight SEC(".maps");

/* A 4 KiB event does not fit on the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_event);
} scratch SEC(".maps");

/* Forces the event type into BTF so the skeleton generates it for Rust. */
struct exec_event _exec_event_type = {};

static __always_inline __u64 event_size(__u32 args_size)
{
	/* Keeps the verifier sure the copy stays inside the scratch value. */
	asm volatile("" : "+r"(args_size));
	if (args_size > EXEC_ARGS_MAX)
		args_size = EXEC_ARGS_MAX;
	return offsetof(struct exec_event, args) + args_size;
}

static __always_inline struct exec_event *scratch_event(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

SEC("tracepoint/sched/sched_process_exec")
int exec_success(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task;
	struct exec_event *e;
	unsigned long start, end, len;
	unsigned int fname_off;

	{
		__u32 old_tid = ctx->old_pid;

		bpf_map_delete_elem(&inflight, &old_tid);
	}
	if (!should_trace_current())
		return 0;
	e = scratch_event();
	if (!e)
		return 0;
	fill_header(&e->hdr);
	e->retval = 0;
	fname_off = ctx->__data_loc_filename & 0xFFFF;
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + fname_off);

	task = (struct task_struct *)bpf_get_current_task();
	start = BPF_CORE_READ(task, mm, arg_start);
	end = BPF_CORE_READ(task, mm, arg_end);
	len = end > start ? end - start : 0;
	e->args_truncated = 0;
	if (len > EXEC_ARGS_MAX) {
		len = EXEC_ARGS_MAX;
		e->args_truncated = 1;
	}
	if (len && bpf_probe_read_user(e->args, len, (void *)start))
		len = 0;
	e->args_size = len;
	output_event(e, event_size(len));
	return 0;
}

static __always_inline int enter_exec(const char *filename, const char *const *argv)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_args a = { .filename = filename, .argv = argv };

	if (!should_trace_current())
		return 0;
	if (bpf_map_update_elem(&inflight, &tid, &a, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int exec_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter_exec((const char *)ctx->args[0], (const char *const *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int execat_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter_exec((const char *)ctx->args[1], (const char *const *)ctx->args[2]);
}

static __always_inline int exit_exec(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_args *a;
	struct exec_event *e;
	__u32 off = 0;

	a = bpf_map_lookup_elem(&inflight, &tid);
	if (!a)
		return 0;
	/* Success was reported by sched_process_exec with the new argv. */
	if (ret >= 0)
		goto out;
	e = scratch_event();
	if (!e)
		goto out;
	fill_header(&e->hdr);
	e->retval = ret;
	e->args_truncated = 0;
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), a->filename);
	for (int i = 0; i < EXEC_ARGV_MAX; i++) {
		const char *argp = NULL;
		long n;

		if (bpf_probe_read_user(&argp, sizeof(argp), &a->argv[i]) || !argp)
			break;
		if (off > EXEC_ARGS_MAX - EXEC_ARG_MAX) {
			e->args_truncated = 1;
			break;
		}
		n = bpf_probe_read_user_str(&e->args[off], EXEC_ARG_MAX, argp);
		if (n <= 0)
			break;
		off += n;
		if (i == EXEC_ARGV_MAX - 1)
			e->args_truncated = 1;
	}
	e->args_size = off;
	output_event(e, event_size(off));
out:
	bpf_map_delete_elem(&inflight, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int exec_exit(struct trace_event_raw_sys_exit *ctx)
{
	return exit_exec(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int execat_exit(struct trace_event_raw_sys_exit *ctx)
{
	return exit_exec(ctx->ret);
}
