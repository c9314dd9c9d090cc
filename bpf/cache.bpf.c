// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* cache probe (cachestat/cachetop). This kernel has no "page accessed"
 * tracepoint, so lookups are counted from the filemap read and fault paths
 * and misses from insertions; user space derives hits = lookups - misses. */
#include "podscope.bpf.h"
#include "cache.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cache_key);
	__type(value, struct cache_counts);
} counts SEC(".maps");

struct cache_key _cache_key_type = {};
struct cache_counts _cache_counts_type = {};

static __always_inline struct cache_counts *counts_for_current(void)
{
	struct cache_key key = {};
	struct cache_counts *c;
	struct task_struct *task;

	if (!should_trace_current())
		return NULL;
	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.cgroup_id = bpf_get_current_cgroup_id();
	c = bpf_map_lookup_elem(&counts, &key);
	if (c)
		return c;
	{
		struct cache_counts zero = {};

		task = (struct task_struct *)bpf_get_current_task();
		zero.uid = (__u32)bpf_get_current_uid_gid();
		zero.ppid = BPF_CORE_READ(task, real_parent, tgid);
		bpf_get_current_comm(zero.comm, sizeof(zero.comm));
		if (bpf_map_update_elem(&counts, &key, &zero, BPF_NOEXIST) == -7 /* E2BIG */) {
			stat_inc(STAT_MAP_FULL);
			return NULL;
		}
	}
	return bpf_map_lookup_elem(&counts, &key);
}

SEC("tracepoint/filemap/mm_filemap_get_pages")
int cache_get_pages(struct trace_event_raw_mm_filemap_op_page_cache_range *ctx)
{
	struct cache_counts *c = counts_for_current();
	if (c && ctx->last_index >= ctx->index)
		__sync_fetch_and_add(&c->accesses, ctx->last_index - ctx->index + 1);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_map_pages")
int cache_map_pages(struct trace_event_raw_mm_filemap_op_page_cache_range *ctx)
{
	struct cache_counts *c = counts_for_current();
	if (c && ctx->last_index >= ctx->index)
		__sync_fetch_and_add(&c->accesses, ctx->last_index - ctx->index + 1);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_fault")
int cache_fault(void *ctx)
{
	struct cache_counts *c = counts_for_current();
	if (c)
		__sync_fetch_and_add(&c->accesses, 1);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int cache_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct cache_counts *c = counts_for_current();
	if (c)
		{
		__u64 pages = 1;
		/* Large folios: older kernels have no order field and only 0-order pages. */
		if (bpf_core_field_exists(ctx->order))
			pages = 1ULL << (BPF_CORE_READ(ctx, order) & 15);
		__sync_fetch_and_add(&c->added, pages);
	}
	return 0;
}

SEC("tracepoint/writeback/writeback_dirty_folio")
int cache_dirty(void *ctx)
{
	struct cache_counts *c = counts_for_current();
	if (c)
		__sync_fetch_and_add(&c->dirtied, 1);
	return 0;
}
