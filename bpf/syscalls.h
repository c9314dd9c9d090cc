/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* syscalls probe: one event per completed system call (stream mode), or
 * per-cgroup, per-syscall totals with a latency histogram (summary mode). */
#ifndef PODSCOPE_SYSCALLS_H
#define PODSCOPE_SYSCALLS_H
#include "event_header.h"

/* Syscall numbers the per-number settings cover (x86_64 and arm64 use < 512). */
#define SYSCALL_NR_MAX 1024
#define SYSCALL_STR_MAX 256
#define SYSCALL_SOCKADDR_MAX 28 /* sizeof(struct sockaddr_in6) */
#define SYSCALL_HIST_SLOTS 32   /* log2 buckets of nanoseconds */

/* Per-syscall-number settings, filled by user space (array map `syscall_conf`). */
#define SC_TRACED 1     /* in the --syscall set (ignored when every call is traced) */
#define SC_NORETURN 2   /* exit, exit_group: reported at entry, there is no exit */

struct syscall_conf {
	__u8 flags;
	__u8 str_arg;      /* 1 + index of an argument that is a user string, or 0 */
	__u8 sockaddr_arg; /* 1 + index of a struct sockaddr * argument, or 0 */
	__u8 pad;
};

struct syscall_event {
	struct event_header hdr;
	__u64 args[6];
	__s64 ret;
	__u64 duration_ns;
	__u32 nr;
	__u8 noreturn;    /* no exit was seen (exit, exit_group): ret is meaningless */
	__u8 str_len;     /* bytes of str read (with NUL), 0: none */
	__u8 sockaddr_len;
	__u8 pad;
	__u8 sockaddr[SYSCALL_SOCKADDR_MAX];
	char str[SYSCALL_STR_MAX];
};

struct syscall_key {
	__u64 cgroup_id;
	__u32 nr;
	__u32 pad;
};

struct syscall_totals {
	__u64 count;
	__u64 errors;
	__u64 total_ns;
	__u64 hist[SYSCALL_HIST_SLOTS]; /* slot i: durations in [2^i, 2^(i+1)) ns; slot 0 also 0 */
};

#endif
