/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The fields every podscope event starts with. Shared by all probes; the Rust
 * side uses the skeleton-generated copy of this struct, never a hand-written one. */
#ifndef PODSCOPE_EVENT_HEADER_H
#define PODSCOPE_EVENT_HEADER_H

#define PODSCOPE_COMM_LEN 16

struct event_header {
	__u64 ts_ns;      /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cgroup_id;  /* cgroup v2 id of the task (or socket owner) */
	__u32 pid;        /* thread-group id, what users call the pid */
	__u32 tid;
	__u32 uid;
	__u32 ppid;       /* 0 where the probe does not know it */
	char comm[PODSCOPE_COMM_LEN];
};

/* Per-probe counters in the `probe_stats` per-CPU array. */
#define STAT_LOST 0       /* ring buffer full: an event could not be reserved */
#define STAT_MAP_FULL 1   /* a tracking map was full: the event will be missing later */
#define STAT_MAX 2

#endif
