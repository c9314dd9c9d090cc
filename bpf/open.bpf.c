// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* open probe (opensnoop): arguments saved at syscall entry, reported at exit
 * with the result, while the caller's path string is still mapped. */
#include "podscope.bpf.h"
#include "open.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AT_FDCWD -100

struct open_args {
	const char *path;
	__s32 flags;
	__u32 mode;
	__s32 dirfd;
};

/* In-flight opens by thread id. A plain hash map, not LRU: eviction would
 * lose opens silently; a full map is counted (STAT_MAP_FULL). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct open_args);
} inflight SEC(".maps");

struct open_event _open_event_type = {};

static __always_inline int enter_open(int dirfd, const char *path, int flags, __u32 mode)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct open_args a = { .path = path, .flags = flags, .mode = mode, .dirfd = dirfd };

	if (!should_trace_current())
		return 0;
	if (bpf_map_update_elem(&inflight, &tid, &a, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int open_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(AT_FDCWD, (const char *)ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_enter(struct trace_event_raw_sys_enter *ctx)
{
	return enter_open(ctx->args[0], (const char *)ctx->args[1], ctx->args[2], ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int openat2_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
	return enter_open(ctx->args[0], (const char *)ctx->args[1], how.flags, how.mode);
}

static __always_inline int exit_open(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct open_args *a;
	struct open_event *e;

	a = bpf_map_lookup_elem(&inflight, &tid);
	if (!a)
		return 0;
	e = reserve_event(sizeof(*e));
	if (e) {
		fill_header(&e->hdr);
		e->ret = ret;
		e->flags = a->flags;
		e->mode = a->mode;
		e->dirfd = a->dirfd;
		if (bpf_probe_read_user_str(e->path, sizeof(e->path), a->path) < 0)
			e->path[0] = 0;
		submit_event(e);
	}
	bpf_map_delete_elem(&inflight, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open")
int open_exit(struct trace_event_raw_sys_exit *ctx)
{
	return exit_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	return exit_open(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int openat2_exit(struct trace_event_raw_sys_exit *ctx)
{
	return exit_open(ctx->ret);
}
