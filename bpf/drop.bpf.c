// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* drop probe: every packet the kernel frees as dropped, from skb:kfree_skb.
 *
 * Normal frees go through consume_skb (its own tracepoint) on every kernel
 * we support, so each kfree_skb is a drop; from Linux 5.17 it carries an
 * `enum skb_drop_reason` (NOT_SPECIFIED, a kfree_skb() without a reason,
 * is still a drop and reported as such). SKB_CONSUMED, which kernels route
 * to consume_skb, is skipped and counted should it ever show up here. On
 * older kernels (5.10) the field does not exist (CO-RE field check): the
 * reason is unknown and the freeing location says where.
 *
 * This runs in softirq context as often as not, so the current task says
 * nothing about whose packet it was. Attribution, in this order:
 *   1. the socket (rx_sk where the tracepoint has it, else skb->sk), if it
 *      is a full socket: its cgroup (sk_cgrp_data), the cgroup filter;
 *   2. the netns the packet was dropped in (skb->dev's, else the socket's):
 *      a pod's netns, from drop_netns (filled by user space: inode -> the
 *      pod's cgroup id);
 *   3. its source or destination address: a pod's IP, from drop_addrs
 *      (drops in the host netns of a pod's packets: host netfilter, bridge).
 * With a pod selection only selected pods are in the maps and the cgroup
 * filter: everything else stays out of the ring. */
#include "podscope.bpf.h"
#include "drop.h"
#include "skb_flow.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} drop_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_MAX_ENTRIES);
	__type(key, struct drop_addr);
	__type(value, __u64);
} drop_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drop_stats SEC(".maps");

/* The record is built here and copied out only if it is wanted, so that
 * packets of unselected pods cost no ring space (and a full ring counts
 * only lost wanted events). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_event);
} scratch SEC(".maps");

struct drop_event _drop_event_type = {};

static __always_inline void drop_stat(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&drop_stats, &which);
	if (v)
		*v += 1;
}

/* Linux < 5.15 packed the cgroup pointer into sock_cgroup_data.val. */
struct sock_cgroup_data___old {
	__u64 val;
} __attribute__((preserve_access_index));

static __always_inline struct cgroup *sock_cgroup(const struct sock *sk)
{
	__u64 val;

	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	val = BPF_CORE_READ((struct sock_cgroup_data___old *)&sk->sk_cgrp_data, val);
	return (val & 3) ? NULL : (struct cgroup *)val;
}

/* Request and time-wait sockets are not full sockets: no sk_cgrp_data. */
static __always_inline bool full_sock(const struct sock *sk)
{
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);

	return state != TCP_TIME_WAIT && state != TCP_NEW_SYN_RECV;
}

/* The pod cgroup of a packet by its addresses (IPv4 mapped into ::ffff:0:0/96). */
static __always_inline __u64 *addr_owner(const __u8 *addr, __u8 family)
{
	struct drop_addr k = {};

	if (family == 4) {
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], addr, 4);
	} else if (family == 6) {
		__builtin_memcpy(k.addr, addr, 16);
	} else {
		return NULL;
	}
	return bpf_map_lookup_elem(&drop_addrs, &k);
}

SEC("tracepoint/skb/kfree_skb")
int kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	struct sk_buff *skb = ctx->skbaddr;
	struct drop_event *e;
	struct net_device *dev;
	struct sock *sk = NULL;
	struct cgroup *cgrp = NULL;
	__u32 reason = 0;
	__u64 *owner;
	__u8 has_reason = 0;
	__u32 zero = 0;
	unsigned char *l4 = NULL;

	drop_stat(DROP_STAT_SEEN);
	if (bpf_core_field_exists(ctx->reason)) {
		reason = BPF_CORE_READ(ctx, reason);
		has_reason = 1;
		if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
		    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED)) {
			drop_stat(DROP_STAT_CONSUMED);
			return 0;
		}
	}
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));

	/* Whose it is first, from the cheapest evidence: an unwanted packet
	 * (another pod's) leaves before the rest is read. */
	if (bpf_core_field_exists(ctx->rx_sk))
		sk = BPF_CORE_READ(ctx, rx_sk);
	if (!sk)
		sk = BPF_CORE_READ(skb, sk);
	dev = BPF_CORE_READ(skb, dev);
	if (dev)
		e->netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	else if (sk)
		e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);

	/* 1. the socket's cgroup */
	if (sk && full_sock(sk)) {
		cgrp = sock_cgroup(sk);
		if (cgrp && cgroup_ptr_allowed(cgrp)) {
			e->by = DROP_BY_SOCKET;
			e->hdr.cgroup_id = cgroup_ptr_id(cgrp);
			l4 = skb_read_ip(&e->flow, skb, skb_network_start(skb));
			goto out;
		}
	}
	/* 2. a pod's netns */
	owner = bpf_map_lookup_elem(&drop_netns, &e->netns);
	if (owner) {
		e->by = DROP_BY_NETNS;
		e->hdr.cgroup_id = *owner;
		l4 = skb_read_ip(&e->flow, skb, skb_network_start(skb));
		goto out;
	}
	/* 3. a pod's address, the source first (its packet going out) */
	l4 = skb_read_ip(&e->flow, skb, skb_network_start(skb));
	owner = addr_owner(e->flow.saddr, e->flow.family);
	if (!owner)
		owner = addr_owner(e->flow.daddr, e->flow.family);
	if (owner) {
		e->by = DROP_BY_ADDRESS;
		e->hdr.cgroup_id = *owner;
		goto out;
	}
	/* Without a pod selection every drop is wanted (nobody's here). */
	if (filter_by_cgroup)
		return 0;
out:
	skb_read_ports(&e->flow, l4);
	e->hdr.ts_ns = bpf_ktime_get_ns();
	e->location = (__u64)ctx->location;
	e->skb = (__u64)skb;
	e->reason = reason;
	e->has_reason = has_reason;
	e->len = BPF_CORE_READ(skb, len);
	if (dev) {
		e->ifindex = BPF_CORE_READ(dev, ifindex);
		BPF_CORE_READ_STR_INTO(&e->ifname, dev, name);
	}
	output_event(e, sizeof(*e));
	return 0;
}
