/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* What every probe shares: the in-kernel filter, the ring buffer, loss counters. */
#ifndef PODSCOPE_BPF_H
#define PODSCOPE_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "event_header.h"

#define FILTER_MAX_ENTRIES 8192
/* Deep enough for kubelet's layouts (kubepods/qos/pod/container is level 4,
 * systemd slices nest one or two more). */
#define CGROUP_MAX_LEVEL 16

/* Settings written by user space between open and load (read-only afterwards). */
const volatile bool filter_by_cgroup = false;
const volatile bool filter_by_pid = false;
const volatile bool filter_by_comm = false;
const volatile char filter_comm[PODSCOPE_COMM_LEN] = {};
/* Wake the consumer only once this much data is pending; below that it
 * drains on its own short timer. One wakeup per event costs ~10 us here. */
const volatile __u64 wakeup_bytes = 65536;
/* The tracer's own process, left out so its reads and writes cannot feed back. */
const volatile __u32 self_tgid = 0;
/* Tracing programs may call bpf_get_current_ancestor_cgroup_id() (not on
 * Linux 5.10); user space finds out before load. */
const volatile bool ancestor_helper = true;

/* Allowed cgroup v2 ids: a task matches if its cgroup or any ancestor is in
 * here, so selecting a pod's cgroup selects containers created later. User
 * space creates this map once and hands the same fd to every probe. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_MAX_ENTRIES);
	__type(key, __u64);
	__type(value, __u8);
} filter_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u8);
} filter_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20); /* resized by user space before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} probe_stats SEC(".maps");

static __always_inline void stat_inc(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&probe_stats, &which);
	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline __u64 submit_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ?
		       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void *reserve_event(__u64 size)
{
	void *e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e)
		stat_inc(STAT_LOST);
	return e;
}

static __always_inline void submit_event(void *e)
{
	bpf_ringbuf_submit(e, submit_flags());
}

/* For variable-length events built in scratch space. */
static __always_inline void output_event(void *data, __u64 size)
{
	if (bpf_ringbuf_output(&events, data, size, submit_flags()))
		stat_inc(STAT_LOST);
}

static __always_inline bool comm_allowed(void)
{
	char comm[PODSCOPE_COMM_LEN];
	if (!filter_by_comm)
		return true;
	bpf_get_current_comm(comm, sizeof(comm));
	for (int i = 0; i < PODSCOPE_COMM_LEN; i++) {
		if (comm[i] != filter_comm[i])
			return false;
		if (comm[i] == 0)
			break;
	}
	return true;
}

static __always_inline bool pid_allowed(__u32 tgid)
{
	if (!filter_by_pid)
		return true;
	return bpf_map_lookup_elem(&filter_pids, &tgid) != NULL;
}

/* Linux < 6.1 kept ancestor ids, not pointers, in struct cgroup. */
struct cgroup___old {
	__u64 ancestor_ids[0];
} __attribute__((preserve_access_index));

/* The v2 id of cgrp's ancestor at `level` (0 = root; cgrp's own level gives
 * cgrp), or 0. */
static __always_inline __u64 cgroup_ancestor_id(struct cgroup *cgrp, int level)
{
	if (bpf_core_field_exists(cgrp->ancestors)) {
		struct cgroup *anc = NULL;

		bpf_core_read(&anc, sizeof(anc), &cgrp->ancestors[level]);
		return anc ? BPF_CORE_READ(anc, kn, id) : 0;
	} else {
		__u64 id = 0;

		bpf_core_read(&id, sizeof(id), &((struct cgroup___old *)cgrp)->ancestor_ids[level]);
		return id;
	}
}

/* The same test for a cgroup known by pointer (e.g. a socket's), used where the
 * current task is unrelated (softirq, interrupt). */
static __always_inline bool cgroup_ptr_allowed(struct cgroup *cgrp)
{
	int level;
	if (!filter_by_cgroup)
		return true;
	if (!cgrp)
		return false;
	level = BPF_CORE_READ(cgrp, level);
	for (int i = 0; i < CGROUP_MAX_LEVEL; i++) {
		__u64 id;
		if (i > level)
			break;
		id = cgroup_ancestor_id(cgrp, i);
		if (!id)
			break;
		if (bpf_map_lookup_elem(&filter_cgroups, &id))
			return true;
	}
	return false;
}

/* The current task's cgroup, or one of its ancestors, is selected. */
static __always_inline bool current_cgroup_allowed(void)
{
	__u64 id;
	if (!filter_by_cgroup)
		return true;
	if (!ancestor_helper) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();

		return cgroup_ptr_allowed(BPF_CORE_READ(task, cgroups, dfl_cgrp));
	}
	id = bpf_get_current_cgroup_id();
	if (bpf_map_lookup_elem(&filter_cgroups, &id))
		return true;
	for (int level = 0; level < CGROUP_MAX_LEVEL; level++) {
		__u64 anc = bpf_get_current_ancestor_cgroup_id(level);
		if (!anc || anc == id)
			break;
		if (bpf_map_lookup_elem(&filter_cgroups, &anc))
			return true;
	}
	return false;
}

/* The filter for events that run in the context of the task they describe. */
static __always_inline bool should_trace_current(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (self_tgid && tgid == self_tgid)
		return false;
	return pid_allowed(tgid) && comm_allowed() && current_cgroup_allowed();
}

static __always_inline __u64 cgroup_ptr_id(struct cgroup *cgrp)
{
	return cgrp ? BPF_CORE_READ(cgrp, kn, id) : 0;
}

static __always_inline void fill_header(struct event_header *h)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	h->ts_ns = bpf_ktime_get_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->pid = pid_tgid >> 32;
	h->tid = (__u32)pid_tgid;
	h->uid = (__u32)bpf_get_current_uid_gid();
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

#endif
