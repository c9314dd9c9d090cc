/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* cgroup watcher: cgroup v2 directories created and removed, so pod
 * selection follows containers as they come and go. Not a user-facing probe. */
#ifndef PODSCOPE_CGROUP_H
#define PODSCOPE_CGROUP_H

#define CGROUP_PATH_MAX 256

#define CGROUP_EV_MKDIR 1
#define CGROUP_EV_RMDIR 2

/* Values in filter_cgroups */
#define FILTER_SELECTED 1 /* chosen by user space */
#define FILTER_PENDING 2  /* a new pod cgroup admitted by the kernel until user space decides */

struct cgroup_event {
	__u64 ts_ns;
	__u64 id;
	__u64 parent_id;
	__u32 level;
	__u8 kind;
	__u8 admitted; /* the kernel admitted it as pending */
	__u8 _pad[2];
	char path[CGROUP_PATH_MAX]; /* relative to the cgroup v2 root */
};

#endif
