// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* cgroup watcher. A new pod's first container can exec within milliseconds
 * of its cgroup appearing, faster than user space can ask the runtime who
 * it is. So the kernel admits new pod cgroups below kubelet's cgroups (and
 * new Docker/podman container cgroups below the engines' cgroups) into the
 * filter at once, as pending, and reports them; user space then keeps the
 * ones the selection wants and removes the others. */
#include "podscope.bpf.h"
#include "cgroup.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define WATCH_KUBE 1 /* a kubelet cgroup: kubepods, or a QoS class below it */

/* Cgroups whose new children are kubelet QoS or pod cgroups. User space
 * seeds it with the v2 root and the kubepods cgroups that already exist. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u8);
} watch_parents SEC(".maps");

/* Admit new pods as pending (only when tracing by pod selection). */
const volatile bool admit_new_pods = false;

struct cgroup_event _cgroup_event_type = {};

#define NAME_MAX_READ 80

static __always_inline bool starts_with(const char *s, const char *p, int n)
{
	for (int i = 0; i < n; i++)
		if (s[i] != p[i])
			return false;
	return true;
}

/* kubepods, kubepods.slice, kubepods-besteffort.slice, besteffort, burstable */
static __always_inline bool is_kube_group(const char *name)
{
	return starts_with(name, "kubepods", 8) || starts_with(name, "besteffort", 11) ||
	       starts_with(name, "burstable", 10);
}

/* Docker's and podman's cgroup directories: docker (cgroupfs driver),
 * system.slice (systemd driver: docker-<id>.scope), libpod_parent and
 * machine.slice (podman). */
static __always_inline bool is_engine_group(const char *name)
{
	return (starts_with(name, "docker", 7)) || starts_with(name, "libpod_parent", 14) ||
	       starts_with(name, "machine.slice", 14) || starts_with(name, "system.slice", 13);
}

static __always_inline bool is_hex64(const char *name)
{
	for (int i = 0; i < 64; i++) {
		char c = name[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
	}
	return name[64] == 0;
}

/* A container's own cgroup: docker-<id>.scope, libpod-<id>[.scope] (not
 * podman's libpod-conmon-<id>.scope), or a bare 64-hex id under /docker. */
static __always_inline bool is_engine_container(const char *name)
{
	if (starts_with(name, "docker-", 7))
		return true;
	if (starts_with(name, "libpod-", 7))
		return !starts_with(name, "libpod-conmon-", 14);
	return is_hex64(name);
}

/* pod<uid> (cgroupfs driver) or kubepods-<qos>-pod<uid>.slice / kubepods-pod<uid>.slice */
static __always_inline bool is_pod_group(const char *name)
{
	if (starts_with(name, "pod", 3))
		return true;
	for (int i = 0; i < NAME_MAX_READ - 4; i++) {
		if (name[i] == 0)
			break;
		if (name[i] == '-' && starts_with(&name[i + 1], "pod", 3))
			return true;
	}
	return false;
}

static __always_inline int report(__u8 kind, struct cgroup *cgrp, const char *path, __u8 admitted,
				  __u64 parent_id)
{
	struct cgroup_event *e = reserve_event(sizeof(*e));

	if (!e)
		return 0;
	e->ts_ns = bpf_ktime_get_ns();
	e->id = BPF_CORE_READ(cgrp, kn, id);
	e->parent_id = parent_id;
	e->level = BPF_CORE_READ(cgrp, level);
	e->kind = kind;
	e->admitted = admitted;
	bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	/* Rare and urgent: wake the consumer now. */
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 0;
}

static __always_inline __u64 parent_id_of(struct cgroup *cgrp)
{
	int level = BPF_CORE_READ(cgrp, level);

	if (level < 1 || level > CGROUP_MAX_LEVEL)
		return 0;
	return cgroup_ancestor_id(cgrp, level - 1);
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	char name[NAME_MAX_READ] = {};
	__u64 parent_id, id;
	__u8 admitted = 0;

	/* hierarchy 0 is cgroup v2, whose ids bpf_get_current_cgroup_id() returns */
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	parent_id = parent_id_of(cgrp);
	id = BPF_CORE_READ(cgrp, kn, id);
	if (bpf_map_lookup_elem(&watch_parents, &parent_id)) {
		bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(cgrp, kn, name));
		if (is_pod_group(name) || is_engine_container(name)) {
			if (admit_new_pods) {
				__u8 pending = FILTER_PENDING;
				if (bpf_map_update_elem(&filter_cgroups, &id, &pending, BPF_ANY))
					stat_inc(STAT_MAP_FULL);
				else
					admitted = 1;
			}
		} else if (is_kube_group(name) || is_engine_group(name)) {
			__u8 watch = WATCH_KUBE;
			if (bpf_map_update_elem(&watch_parents, &id, &watch, BPF_ANY))
				stat_inc(STAT_MAP_FULL);
		}
	}
	return report(CGROUP_EV_MKDIR, cgrp, path, admitted, parent_id);
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(cgroup_rmdir, struct cgroup *cgrp, const char *path)
{
	__u64 id;

	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	id = BPF_CORE_READ(cgrp, kn, id);
	bpf_map_delete_elem(&watch_parents, &id);
	return report(CGROUP_EV_RMDIR, cgrp, path, 0, parent_id_of(cgrp));
}
