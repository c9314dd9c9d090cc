/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* bio probe: one event per completed block I/O request, attributed to the
 * task that submitted it. */
#ifndef PODSCOPE_BIO_H
#define PODSCOPE_BIO_H
#include "event_header.h"

#define BIO_DISK_NAME_LEN 32

struct bio_event {
	struct event_header hdr; /* the submitter, not the completing interrupt */
	__u64 sector;
	__u64 latency_ns;   /* issue to driver -> completion */
	__u64 queued_ns;    /* submit -> issue to driver */
	__u32 bytes;
	__u32 op;           /* REQ_OP_*: 0 read, 1 write, 2 flush, 3 discard, ... */
	__u32 cmd_flags;    /* full REQ_* flags (sync, fua, ...) */
	__s32 error;        /* blk_status_t; 0 on success */
	__u32 dev_major;
	__u32 dev_minor;
	char disk[BIO_DISK_NAME_LEN];
};

#endif
