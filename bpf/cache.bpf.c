// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* cache probe (cachestat/cachetop). Two ways to count lookups, chosen by
 * user space at load time:
 * - exact (where fentry is allowed): folio_mark_accessed() is the classic
 *   "page accessed", filemap_add_folio() an insertion;
 * - tracepoints (everywhere, e.g. kernels that refuse fentry): there is no
 *   "page accessed" tracepoint, so lookups are counted from the filemap read
 *   and fault paths and insertions from mm_filemap_add_to_page_cache.
 * Dirtied pages come from writeback_dirty_folio in both. User space derives
 * misses = insertions - dirtied and hits = lookups - misses. */
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

/* log2 of the page size; set by user space (4 KiB pages unless told otherwise). */
const volatile __u32 page_shift = 12;

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

/* filemap_read() calls filemap_get_pages() once per batch of folios, and
 * each call reports the whole rest of the request [index, last]. Counting
 * every report would count a 1,000-page read ~16 times over, so each page of
 * a request is counted once: per thread, remember the file and how far has
 * been counted; a read that starts over resets it. */
struct read_cursor {
	__u64 mapping;
	__u64 prev_index;
	__u64 counted_end; /* last page index counted, +1 (0 = none) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct read_cursor);
} cursors SEC(".maps");

SEC("tp_btf/mm_filemap_get_pages")
int BPF_PROG(cache_get_pages, struct address_space *mapping, unsigned long index,
	     unsigned long last_index)
{
	struct cache_counts *c = counts_for_current();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct read_cursor *cur, fresh = {};
	__u64 size, last = last_index, from;

	if (!c)
		return 0;
	/* The request may ask past the end of the file. */
	size = BPF_CORE_READ(mapping, host, i_size);
	if (!size)
		return 0;
	if (last > (size - 1) >> page_shift)
		last = (size - 1) >> page_shift;
	if (last < index)
		return 0;
	cur = bpf_map_lookup_elem(&cursors, &tid);
	if (!cur || cur->mapping != (__u64)mapping || index <= cur->prev_index) {
		fresh.mapping = (__u64)mapping;
		fresh.prev_index = index;
		fresh.counted_end = index;
		bpf_map_update_elem(&cursors, &tid, &fresh, BPF_ANY);
		cur = bpf_map_lookup_elem(&cursors, &tid);
		if (!cur)
			return 0;
	}
	from = index > cur->counted_end ? index : cur->counted_end;
	if (last + 1 > from) {
		__sync_fetch_and_add(&c->accesses, last + 1 - from);
		cur->counted_end = last + 1;
	}
	cur->prev_index = index;
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

/* Linux < 5.17 (writeback_dirty_folio replaced it). */
SEC("tracepoint/writeback/writeback_dirty_page")
int cache_dirty_page(void *ctx)
{
	struct cache_counts *c = counts_for_current();
	if (c)
		__sync_fetch_and_add(&c->dirtied, 1);
	return 0;
}

/* Attach targets are set by user space to the names this kernel has
 * (mark_page_accessed / add_to_page_cache_lru before folios). */
SEC("fentry/folio_mark_accessed")
int BPF_PROG(cache_exact_accessed, struct folio *folio)
{
	struct cache_counts *c = counts_for_current();
	if (c)
		__sync_fetch_and_add(&c->accesses, 1);
	return 0;
}

SEC("fentry/filemap_add_folio")
int BPF_PROG(cache_exact_add, struct address_space *mapping, struct folio *folio)
{
	struct cache_counts *c = counts_for_current();
	if (c)
		__sync_fetch_and_add(&c->added, 1);
	return 0;
}
