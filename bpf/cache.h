/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* cache probe: page-cache activity per process, aggregated in the kernel and
 * read (and reset) by user space once per interval. */
#ifndef PODSCOPE_CACHE_H
#define PODSCOPE_CACHE_H
#include "event_header.h"

struct cache_key {
	__u32 pid;
	__u32 _pad;
	__u64 cgroup_id;
};

struct cache_counts {
	__u64 accesses;  /* pages looked up through read, fault and fault-around */
	__u64 added;     /* pages inserted into the page cache */
	__u64 dirtied;   /* pages made dirty */
	__u32 uid;
	__u32 ppid;
	char comm[PODSCOPE_COMM_LEN];
};

#endif
