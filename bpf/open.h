/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* open probe: one event per open()/openat()/openat2() with its result. */
#ifndef PODSCOPE_OPEN_H
#define PODSCOPE_OPEN_H
#include "event_header.h"

#define OPEN_PATH_MAX 256

struct open_event {
	struct event_header hdr;
	__s32 ret;      /* fd, or -errno */
	__s32 flags;    /* O_* flags as passed */
	__u32 mode;
	__s32 dirfd;    /* AT_FDCWD (-100) for open() */
	char path[OPEN_PATH_MAX];
};

#endif
