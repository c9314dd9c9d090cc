/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* exec probe: one event per execve()/execveat(), successful or failed. */
#ifndef PODSCOPE_EXEC_H
#define PODSCOPE_EXEC_H
#include "event_header.h"

#define EXEC_FILENAME_MAX 256
#define EXEC_ARGS_MAX 4096   /* whole argv, NUL-separated; longer is truncated */
#define EXEC_ARG_MAX 256     /* one argument, on the failed-exec path only */
#define EXEC_ARGV_MAX 64     /* arguments read on the failed-exec path */

struct exec_event {
	struct event_header hdr;
	__s32 retval;         /* 0, or -errno for a failed exec */
	__u32 args_size;      /* bytes of args[] in use */
	__u8 args_truncated;  /* 1: argv was longer than we copy */
	__u8 _pad[7];
	char filename[EXEC_FILENAME_MAX];
	char args[EXEC_ARGS_MAX]; /* only args_size bytes are sent */
};

#endif
