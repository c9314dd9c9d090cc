/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* accelerate, kernel side: the socket key of the sockhash, what user space
 * tells the kernel about local addresses, and the counters it reads back. */
#ifndef PODSCOPE_ACCEL_H
#define PODSCOPE_ACCEL_H

/* One end of a TCP connection as seen from its own socket. Addresses are
 * IPv6 or IPv4-mapped IPv6 (::ffff:a.b.c.d), ports in host byte order.
 * netns is 0: only pod-to-pod connections join, and pod IPs are unique on
 * the node (the two ends are in different netns). Loopback connections,
 * whose tuples repeat in every pod, would need the netns cookie here if they
 * are ever accelerated (bpf_get_netns_cookie in sockops/sk_msg: 5.15+). */
struct accel_key {
	__u8 local[16];
	__u8 remote[16];
	__u32 lport;
	__u32 rport;
	__u64 netns;
};

/* What user space knows about an address of this node (accel_addrs). */
struct accel_addr_info {
	__u64 pod_cgroup;  /* the pod-level cgroup id of the pod owning it */
	__u32 selected;    /* 1: the pod is selected for acceleration */
	__u32 _pad;
};

/* Per socket in the sockhash (accel_socks_info, same key). */
struct accel_sock_info {
	__u64 pod_cgroup;  /* whose socket: the selected cgroup that matched */
	__u64 msgs;        /* messages this socket sent that were redirected */
	__u64 bytes;
	__u64 passed_msgs; /* messages that went the normal way (no peer in the map) */
	__u64 passed_bytes;
	__u32 accelerated; /* the peer socket was in the map when this one joined, or later */
	__u32 _pad;
};

/* Per pod (accel_pods, key: pod-level cgroup id). */
struct accel_pod_stats {
	__u64 msgs;         /* messages redirected from this pod's sockets */
	__u64 bytes;        /* their bytes (sk_msg size: what the application sent) */
	__u64 passed_msgs;  /* messages of this pod's mapped sockets not redirected */
	__u64 passed_bytes;
	__u64 sockets;      /* sockets added to the sockhash */
	__u64 accelerated;  /* connections whose two sockets met in the map (counted once, on the second) */
};

/* Node-wide counters (accel_stats, per-CPU array). */
#define ACCEL_STAT_ESTABLISHED 0    /* established callbacks seen (all TCP on the node) */
#define ACCEL_STAT_NOT_SELECTED 1   /* left alone: the socket's cgroup is not selected */
#define ACCEL_STAT_PEER_NOT_LOCAL 2 /* left alone: the peer address is no pod's on this node, nor loopback */
#define ACCEL_STAT_PEER_NOT_SELECTED 3 /* left alone: the peer is a local pod that is not selected */
#define ACCEL_STAT_MAP_FULL 4       /* left alone: the sockhash (or info map) had no room */
#define ACCEL_STAT_MAP_ERROR 5      /* left alone: sockhash update failed otherwise */
#define ACCEL_STAT_ADDED 6          /* sockets added to the sockhash */
#define ACCEL_STAT_ACCELERATED 7    /* connections accelerated (both ends in the map) */
#define ACCEL_STAT_CLOSED 8         /* mapped sockets that closed (removed from the map) */
#define ACCEL_STAT_MSGS 9           /* messages redirected */
#define ACCEL_STAT_BYTES 10         /* bytes redirected */
#define ACCEL_STAT_PASSED_MSGS 11   /* messages of mapped sockets passed (no peer) */
#define ACCEL_STAT_PASSED_BYTES 12
#define ACCEL_STAT_NOT_INET 13      /* left alone: neither IPv4 nor IPv6 */
#define ACCEL_STAT_PREEXISTING 14  /* sockets of selected pods established before enable (written by user space) */
#define ACCEL_STAT_LOOPBACK 15     /* left alone: loopback (see docs/accelerate.md: --off stalled open loopback connections) */
#define ACCEL_STAT_MAX 16

#define ACCEL_MAX_SOCKETS 65536
#define ACCEL_MAX_ADDRS 8192
#define ACCEL_MAX_CGROUPS 8192
#define ACCEL_CGROUP_MAX_LEVEL 16

#endif
