// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* bio probe (biosnoop). A request is recorded in its submitter's context,
 * stamped when it is handed to the driver (block_rq_issue) and reported when
 * it completes (block_rq_complete, often in interrupt context), keyed by
 * request. Two ways to see the submission, chosen by user space at load:
 * - block_io_start (Linux 6.5+): fires once per request, with the request;
 * - block_getrq (every kernel): fires once per request allocated for a bio,
 *   with the bio that becomes the request's first bio; it is recorded by bio
 *   and moved to the request at issue (or found through rq->bio at completion
 *   for requests that are never issued themselves, like the empty preflush
 *   of an fsync, which the flush machinery completes).
 * Linux 5.10 passes the request queue first to getrq, rq_issue and rq_merge:
 * the *_q programs take that layout.
 *
 * Tracking maps are plain hash maps, not LRU: an LRU map evicts live entries
 * without telling anyone, which lost requests silently. A full map is
 * counted (STAT_MAP_FULL); a request merged into another is forgotten at
 * block_rq_merge (its bytes complete as part of the other). */
#include "podscope.bpf.h"
#include "bio.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define REQ_OP_BITS 8
#define REQ_OP_MASK ((1 << REQ_OP_BITS) - 1)
#define REQ_OP_FLUSH 2

struct rq_info {
	struct event_header owner;
	__u64 start_ns;
	__u64 issue_ns;
	__u32 cmd_flags; /* at submission: the flush machinery clears PREFLUSH later */
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct request * */
	__type(value, struct rq_info);
} inflight SEC(".maps");

/* block_getrq: submissions not yet tied to a request, by first bio. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct bio * */
	__type(value, struct rq_info);
} by_bio SEC(".maps");

struct bio_event _bio_event_type = {};

/* Linux < 5.15 kept the disk in the request, not in its queue. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline struct gendisk *disk_of(struct request *rq)
{
	if (bpf_core_field_exists(rq->q->disk))
		return BPF_CORE_READ(rq, q, disk);
	return BPF_CORE_READ((struct request___old *)rq, rq_disk);
}

static __always_inline void record(void *map, __u64 key, __u32 cmd_flags)
{
	struct rq_info info = {};

	if (!should_trace_current())
		return;
	fill_header(&info.owner);
	info.start_ns = info.owner.ts_ns;
	info.cmd_flags = cmd_flags;
	if (bpf_map_update_elem(map, &key, &info, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
}

SEC("tp_btf/block_io_start")
int BPF_PROG(bio_start, struct request *rq)
{
	record(&inflight, (__u64)rq, BPF_CORE_READ(rq, cmd_flags));
	return 0;
}

static __always_inline int getrq(struct bio *bio)
{
	record(&by_bio, (__u64)bio, BPF_CORE_READ(bio, bi_opf));
	return 0;
}

SEC("tp_btf/block_getrq")
int BPF_PROG(bio_getrq, struct bio *bio)
{
	return getrq(bio);
}

SEC("tp_btf/block_getrq")
int BPF_PROG(bio_getrq_q, void *q, struct bio *bio)
{
	return getrq(bio);
}

/* Bios of one request searched for its by-bio record. The record is keyed
 * by the bio that made the request (block_getrq), which a front merge moves
 * off the head of rq->bio; back merges append after it. */
#define BIO_CHAIN_MAX 32

/* The by-bio record of a request (its bio in *found), or NULL. */
static __always_inline struct rq_info *by_bio_of(struct request *rq, __u64 *found)
{
	__u64 bio = (__u64)BPF_CORE_READ(rq, bio);
	struct rq_info *info;

	for (int i = 0; i < BIO_CHAIN_MAX && bio; i++) {
		info = bpf_map_lookup_elem(&by_bio, &bio);
		if (info) {
			*found = bio;
			return info;
		}
		bio = (__u64)BPF_CORE_READ((struct bio *)bio, bi_next);
	}
	return NULL;
}

/* The request's record, moving a by-bio record over to the request. */
static __always_inline struct rq_info *lookup(struct request *rq)
{
	__u64 key = (__u64)rq, bio = 0;
	struct rq_info *info = bpf_map_lookup_elem(&inflight, &key);

	if (info)
		return info;
	info = by_bio_of(rq, &bio);
	if (!info)
		return NULL;
	if (bpf_map_update_elem(&inflight, &key, info, BPF_ANY)) {
		stat_inc(STAT_MAP_FULL);
		bpf_map_delete_elem(&by_bio, &bio);
		return NULL;
	}
	bpf_map_delete_elem(&by_bio, &bio);
	return bpf_map_lookup_elem(&inflight, &key);
}

static __always_inline int issue(struct request *rq)
{
	struct rq_info *info = lookup(rq);

	if (info)
		info->issue_ns = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(bio_issue, struct request *rq)
{
	return issue(rq);
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(bio_issue_q, void *q, struct request *rq)
{
	return issue(rq);
}

/* `next` was merged into another request and is freed without completing. */
static __always_inline int merged(struct request *next)
{
	__u64 key = (__u64)next, bio = 0;

	bpf_map_delete_elem(&inflight, &key);
	if (by_bio_of(next, &bio))
		bpf_map_delete_elem(&by_bio, &bio);
	return 0;
}

SEC("tp_btf/block_rq_merge")
int BPF_PROG(bio_merge, struct request *next)
{
	return merged(next);
}

SEC("tp_btf/block_rq_merge")
int BPF_PROG(bio_merge_q, void *q, struct request *next)
{
	return merged(next);
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(bio_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	struct rq_info *info = lookup(rq);
	struct bio_event *e;
	struct gendisk *disk;
	__u64 now;
	__u32 preflush = 1U << bpf_core_enum_value(enum req_flag_bits, __REQ_PREFLUSH);

	if (!info)
		return 0;
	e = reserve_event(sizeof(*e));
	if (e) {
		now = bpf_ktime_get_ns();
		e->hdr = info->owner;
		e->hdr.ts_ns = now;
		e->sector = BPF_CORE_READ(rq, __sector);
		if (info->issue_ns) {
			e->latency_ns = now - info->issue_ns;
			e->queued_ns = info->issue_ns - info->start_ns;
		} else {
			e->latency_ns = now - info->start_ns;
			e->queued_ns = 0;
		}
		e->bytes = nr_bytes;
		e->cmd_flags = info->cmd_flags;
		e->op = info->cmd_flags & REQ_OP_MASK;
		/* An empty write with PREFLUSH is a cache flush (fsync, O_DSYNC). */
		if (nr_bytes == 0 && (info->cmd_flags & preflush))
			e->op = REQ_OP_FLUSH;
		e->error = error;
		disk = disk_of(rq);
		e->dev_major = BPF_CORE_READ(disk, major);
		e->dev_minor = BPF_CORE_READ(disk, first_minor);
		BPF_CORE_READ_STR_INTO(&e->disk, disk, disk_name);
		submit_event(e);
	}
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}
