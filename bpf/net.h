/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* net probe, kernel side: a pod's packets followed across the stack's
 * tracepoints (device queue, device transmit, receive, GRO, drop), per-flow
 * totals with per-stage latency histograms in a map, and with --per-packet
 * (or --flow) one record per packet and stage. */
#ifndef PODSCOPE_NET_H
#define PODSCOPE_NET_H
#include "event_header.h"
#include "skb_flow.h"

#define NET_IFNAMSIZ 16

/* What happened to the packet (the tracepoint). */
#define NET_TP_QUEUE 0 /* net:net_dev_queue: handed to a device's queue */
#define NET_TP_XMIT 1  /* net:net_dev_xmit: the device's driver took it */
#define NET_TP_RECV 2  /* net:netif_receive_skb: a device received it */
#define NET_TP_GRO 3   /* net:napi_gro_receive_entry: NAPI GRO got it */
#define NET_TPS 4
/* Where, relative to the pod the packet belongs to. */
#define NET_LOC_POD 0  /* a device in the pod's netns (its eth0, lo) */
#define NET_LOC_VETH 1 /* the pod's host-side veth (the peer of its eth0) */
#define NET_LOC_HOST 2 /* another device in the host netns (bridge, other veths, NIC) */
#define NET_LOC_PEER 3 /* a device in another netns (the peer pod's eth0) */
#define NET_LOCS 4
/* stage = loc * NET_TPS + tp */
#define NET_STAGES (NET_TPS * NET_LOCS)
/* Per-packet records only: the packet was dropped (skb:kfree_skb). */
#define NET_STAGE_DROP 255

#define NET_HIST_SLOTS 32 /* log2 buckets of nanoseconds */

/* The flow a packet is counted under: the pod it belongs to (the pod whose
 * device it was first seen on) and its addresses, protocol and ports. */
struct net_flow_key {
	__u64 cgroup_id; /* the pod's cgroup (0: the host's, with --all) */
	__u8 family;
	__u8 l4proto;
	__u16 sport;
	__u16 dport;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct net_flow_stats {
	__u64 packets;   /* packets first seen (counted once each) */
	__u64 bytes;     /* their IP lengths */
	__u64 drops;     /* of them, freed by kfree_skb as dropped */
	__u64 first_ns;
	__u64 last_ns;
	__u32 seen[NET_STAGES];                  /* packets that reached each stage */
	__u32 step[NET_STAGES][NET_HIST_SLOTS];  /* time from the packet's previous stage */
	__u32 total[NET_STAGES][NET_HIST_SLOTS]; /* time from its first stage */
};

/* One packet at one stage (--per-packet / --flow). */
struct net_event {
	struct event_header hdr; /* cgroup_id: the pod's; pid 0 */
	__u64 skb;
	__u64 packet;    /* the packet's number (the same at each of its stages) */
	__u64 step_ns;   /* since its previous stage (0 at the first) */
	__u64 total_ns;  /* since its first stage */
	__u64 location;  /* drops: kernel text address that freed it */
	__u32 netns;     /* the device's netns inode */
	__u32 ifindex;
	__u32 len;       /* skb->len here */
	__u32 reason;    /* drops: enum skb_drop_reason (has_reason) */
	__u8 stage;      /* loc * NET_TPS + tp, or NET_STAGE_DROP */
	__u8 has_reason;
	__u8 first;      /* 1 at the packet's first stage */
	__u8 _pad;
	struct skb_flow flow;
	char ifname[NET_IFNAMSIZ];
};

/* What user space asks for (net_config[0]); changed live. */
#define NET_FILTER_HOSTS 2
#define NET_FILTER_PORTS 2
struct net_config {
	__u8 per_packet; /* 1: a record per packet and stage */
	__u8 l4proto;    /* 0: any */
	__u8 nhosts;
	__u8 nports;
	__u16 ports[NET_FILTER_PORTS];              /* each must be the sport or dport */
	__u8 hosts[NET_FILTER_HOSTS][16];           /* each must be the saddr or daddr (v4 mapped) */
};

/* Counters beyond the shared ones (probe_stats slots). */
#define NET_STAT_NEW 2        /* packets first seen */
#define NET_STAT_FILTERED 3   /* packets of selected pods the --flow filter left out in the kernel */
#define NET_STAT_RESTARTED 4  /* an skb address seen again as a new packet */
#define NET_STAT_FLOWS_FULL 5 /* a flow could not be added (should not happen: LRU) */
#define NET_STAT_DROPS 6      /* followed packets dropped */
#define NET_STAT_MAX 7

#endif
