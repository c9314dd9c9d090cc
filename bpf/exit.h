/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* exit probe: one event per process (thread group) exit. */
#ifndef PODSCOPE_EXIT_H
#define PODSCOPE_EXIT_H
#include "event_header.h"

struct exit_event {
	struct event_header hdr;
	__u64 lifetime_ns;  /* from process start to exit */
	__u32 exit_code;    /* raw wait status: code << 8 | core << 7 | signal */
	__u32 _pad;
};

#endif
