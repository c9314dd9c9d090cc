/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* drop probe, kernel side: one record per packet the kernel freed as dropped
 * (skb:kfree_skb), with its reason, where, whose it was and its flow. */
#ifndef PODSCOPE_DROP_H
#define PODSCOPE_DROP_H
#include "event_header.h"
#include "skb_flow.h"

#define DROP_IFNAMSIZ 16

/* How the packet was attributed (hdr.cgroup_id). */
#define DROP_BY_NONE 0    /* nothing known: cgroup_id 0 (a host drop under -A) */
#define DROP_BY_SOCKET 1  /* the socket's cgroup (sk_cgrp_data) */
#define DROP_BY_NETNS 2   /* the device's (or socket's) netns is a pod's */
#define DROP_BY_ADDRESS 3 /* its source or destination address is a pod's */

struct drop_event {
	struct event_header hdr;
	__u64 location; /* kernel text address that freed it */
	__u64 skb;
	__u32 reason;   /* enum skb_drop_reason value; 0 when has_reason == 0 */
	__u32 netns;    /* inode of the netns it was dropped in (device's, else socket's) */
	__u32 ifindex;  /* skb->dev, 0 if none */
	__u32 len;      /* skb->len */
	__u8 has_reason;
	__u8 by;        /* DROP_BY_* */
	__u8 _pad[2];
	struct skb_flow flow;
	char ifname[DROP_IFNAMSIZ];
};

/* Key of the address -> pod map: IPv4 as ::ffff:a.b.c.d. */
struct drop_addr {
	__u8 addr[16];
};

/* Counters beyond the shared ones (probe_stats slots). */
#define DROP_STAT_SEEN 2     /* kfree_skb calls the probe ran for */
#define DROP_STAT_CONSUMED 3 /* reason SKB_CONSUMED: not a drop, skipped */
#define DROP_STAT_MAX 4

#endif
