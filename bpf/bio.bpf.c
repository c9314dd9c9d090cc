// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* bio probe (biosnoop). block_io_start runs in the submitter's context and
 * records who; block_rq_issue stamps the hand-off to the driver;
 * block_rq_complete (interrupt context) reports, keyed by request. */
#include "podscope.bpf.h"
#include "bio.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define REQ_OP_BITS 8
#define REQ_OP_MASK ((1 << REQ_OP_BITS) - 1)

struct rq_info {
	struct event_header owner;
	__u64 start_ns;
	__u64 issue_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* struct request * */
	__type(value, struct rq_info);
} inflight SEC(".maps");

struct bio_event _bio_event_type = {};

SEC("tp_btf/block_io_start")
int BPF_PROG(bio_start, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct rq_info info = {};

	if (!should_trace_current())
		return 0;
	fill_header(&info.owner);
	info.start_ns = info.owner.ts_ns;
	if (bpf_map_update_elem(&inflight, &key, &info, BPF_ANY))
		stat_inc(STAT_MAP_FULL);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(bio_issue, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct rq_info *info = bpf_map_lookup_elem(&inflight, &key);

	if (info)
		info->issue_ns = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(bio_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	struct rq_info *info = bpf_map_lookup_elem(&inflight, &key);
	struct bio_event *e;
	struct gendisk *disk;
	__u64 now;

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
		e->cmd_flags = BPF_CORE_READ(rq, cmd_flags);
		e->op = e->cmd_flags & REQ_OP_MASK;
		e->error = error;
		disk = BPF_CORE_READ(rq, q, disk);
		e->dev_major = BPF_CORE_READ(disk, major);
		e->dev_minor = BPF_CORE_READ(disk, first_minor);
		BPF_CORE_READ_STR_INTO(&e->disk, disk, disk_name);
		submit_event(e);
	}
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}
