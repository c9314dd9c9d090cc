// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* net probe: a pod's packets followed through the stack, from tracepoints
 * only (no kprobes or fentry here):
 *
 *   net:net_dev_queue          a device's queue took it (dev_queue_xmit)
 *   net:net_dev_xmit           the driver took it (veth: forwarded to the peer)
 *   net:netif_receive_skb      a device received it (veth peer, bridge, NIC)
 *   net:napi_gro_receive_entry NAPI drivers' GRO (physical NICs, veth with GRO/XDP)
 *   skb:kfree_skb              it was dropped (its reason from 5.17)
 *
 * This runs in softirq context as often as not: a packet's pod is found from
 * the device, never from the current task. A device in a pod's netns (from
 * net_netns, filled by user space: netns inode -> the pod's cgroup id) is
 * the pod's; a veth in the host netns whose peer is in a pod's netns is that
 * pod's host-side veth (found here from the veth itself, so a new pod's veth
 * needs no user-space step). A packet belongs to the pod whose device it was
 * first seen on; from then on it is followed by its skb address
 * (net_inflight, an LRU map) on every device it crosses, the peer pod's
 * included. veth and the bridge forward the same sk_buff (checked on this
 * kernel: the address at the pod's eth0 queue is the one the host veth and
 * the peer's eth0 receive), so the address plus the flow key identifies the
 * packet. skbs are reused as soon as they are freed (often by the next
 * packet of the same flow), so a packet stops being followed once it is
 * received into a pod's netns (delivered), and an address seen again at a
 * stage the packet already passed, with another flow, or after
 * NET_TIMEOUT_NS is a new packet.
 *
 * The flow totals (packets, bytes, drops, per-stage counts and log2
 * latency histograms) are kept here in net_flows and read by user space
 * each interval; per-packet records go to the ring only when asked for. */
#include "podscope.bpf.h"
#include "net.h"
#include "skb_flow.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The host's netns inode (user space sets it before load). */
const volatile __u32 host_netns = 0;

#define NET_TIMEOUT_NS 1000000000ULL
#define NETDEV_ALIGN 32

struct net_pkt {
	__u64 first_ns;
	__u64 prev_ns;
	__u64 packet;
	struct net_flow_key key;
	__u32 seen; /* bitmask of stages passed */
	__u32 q_netns;
	__u32 q_ifindex;
	__u32 ip_len;
	__u8 q_loc;
	__u8 queued;
	__u8 _pad[6];
	char q_ifname[NET_IFNAMSIZ];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FILTER_MAX_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} net_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct net_pkt);
} net_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024); /* resized by user space before load */
	__type(key, struct net_flow_key);
	__type(value, struct net_flow_stats);
} net_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct net_config);
} net_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NET_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} net_stats SEC(".maps");

/* Scratch: a new packet's entry, the record, a new flow's zeroed totals. */
struct net_scratch {
	struct net_pkt pkt;
	struct net_event ev;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct net_scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct net_flow_stats);
} zero_stats SEC(".maps");

/* Packet numbers: per CPU, so no fetch-and-add whose result is used (not
 * before Linux 5.12); the CPU is in the low 10 bits. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} net_seq SEC(".maps");

struct net_event _net_event_type = {};
struct net_flow_key _net_flow_key_type = {};
struct net_flow_stats _net_flow_stats_type = {};
struct net_config _net_config_type = {};

static __always_inline void net_stat(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&net_stats, &which);
	if (v)
		*v += 1;
}

/* A global function: verified once on its own, not once per path of its
 * callers (the unrolled branches multiplied the states past the limit). */
__noinline __u32 log2_slot(__u64 v)
{
	__u32 s = 0;

#pragma unroll
	for (int i = 5; i >= 0; i--) {
		__u32 b = 1U << i;
		if (v >> b) {
			v >>= b;
			s += b;
		}
	}
	return s < NET_HIST_SLOTS ? s : NET_HIST_SLOTS - 1;
}

/* Is dev a veth? Its rtnl_link_ops kind says so. */
static __always_inline bool is_veth(struct net_device *dev)
{
	const struct rtnl_link_ops *ops = BPF_CORE_READ(dev, rtnl_link_ops);
	const char *kind;
	char k[5] = {};

	if (!ops)
		return false;
	kind = BPF_CORE_READ(ops, kind);
	if (!kind || bpf_probe_read_kernel(k, sizeof(k), kind))
		return false;
	return k[0] == 'v' && k[1] == 'e' && k[2] == 't' && k[3] == 'h' && k[4] == 0;
}

/* The netns inode of a veth's peer, 0 if none. netdev_priv() is dev->priv
 * where the field exists (6.10+), else the aligned end of struct net_device;
 * veth_priv starts with the peer pointer on every kernel we support. */
static __always_inline __u32 veth_peer_netns(struct net_device *dev)
{
	struct net_device *peer = NULL;
	unsigned long off;

	if (bpf_core_field_exists(dev->priv))
		off = bpf_core_field_offset(dev->priv);
	else
		off = (bpf_core_type_size(struct net_device) + NETDEV_ALIGN - 1) &
		      ~(NETDEV_ALIGN - 1);
	if (bpf_probe_read_kernel(&peer, sizeof(peer), (char *)dev + off) || !peer)
		return 0;
	return BPF_CORE_READ(peer, nd_net.net, ns.inum);
}

/* Whose device dev is: the pod whose netns it is in (*in_pod), or whose
 * host-side veth it is (*of_pod), 0 if neither. */
static __always_inline void owners(struct net_device *dev, __u32 netns, __u64 *in_pod, __u64 *of_pod)
{
	__u64 *pod = bpf_map_lookup_elem(&net_netns, &netns);

	*in_pod = pod ? *pod : 0;
	*of_pod = 0;
	if (pod || netns != host_netns || !is_veth(dev))
		return;
	netns = veth_peer_netns(dev);
	pod = netns ? bpf_map_lookup_elem(&net_netns, &netns) : NULL;
	*of_pod = pod ? *pod : 0;
}

/* Where the device is for a packet of pod `owner` (0: a new packet: the
 * pod whose device it is, if any). */
static __always_inline __u8 locate(__u64 owner, __u64 in_pod, __u64 of_pod, __u32 netns)
{
	if (in_pod)
		return (!owner || in_pod == owner) ? NET_LOC_POD : NET_LOC_PEER;
	if (netns != host_netns)
		return NET_LOC_PEER;
	if (of_pod && (!owner || of_pod == owner))
		return NET_LOC_VETH;
	return NET_LOC_HOST;
}

static __always_inline bool addr16_eq(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* want is IPv4 as ::ffff:a.b.c.d (user space keys it so), a the packet's. */
static __always_inline bool addr_is(const __u8 *want, const struct skb_flow *f, const __u8 *a)
{
	const __u32 *w = (const __u32 *)want;

	if (f->family == 4)
		return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff) &&
		       w[3] == *(const __u32 *)a;
	return addr16_eq(want, a);
}

/* The --flow filter's kernel part: protocol, ports, hosts. */
static __always_inline bool flow_wanted(const struct net_config *c, const struct skb_flow *f)
{
	if (c->l4proto && c->l4proto != f->l4proto)
		return false;
#pragma unroll
	for (int i = 0; i < NET_FILTER_PORTS; i++) {
		if (i >= c->nports)
			break;
		if (c->ports[i] != f->sport && c->ports[i] != f->dport)
			return false;
	}
#pragma unroll
	for (int i = 0; i < NET_FILTER_HOSTS; i++) {
		if (i >= c->nhosts)
			break;
		if (!addr_is(c->hosts[i], f, f->saddr) && !addr_is(c->hosts[i], f, f->daddr))
			return false;
	}
	return true;
}

static __always_inline bool same_flow(const struct net_flow_key *k, const struct skb_flow *f)
{
	return k->family == f->family && k->l4proto == f->l4proto && k->sport == f->sport &&
	       k->dport == f->dport && addr16_eq(k->saddr, f->saddr) &&
	       addr16_eq(k->daddr, f->daddr);
}

static __always_inline void count_stage(struct net_flow_stats *st, __u32 stage, __u64 step,
					__u64 total)
{
	__u32 s = stage & (NET_STAGES - 1);
	__u32 a = log2_slot(step) & (NET_HIST_SLOTS - 1);
	__u32 b = log2_slot(total) & (NET_HIST_SLOTS - 1);

	__sync_fetch_and_add(&st->seen[s], 1);
	__sync_fetch_and_add(&st->step[s][a], 1);
	__sync_fetch_and_add(&st->total[s][b], 1);
}

static __always_inline void emit(struct net_pkt *p, struct net_event *e, struct sk_buff *skb,
				 __u8 stage, __u64 now, __u64 step, __u32 netns, __u32 ifindex,
				 struct skb_flow *f, bool first)
{
	e->hdr.ts_ns = now;
	e->hdr.cgroup_id = p->key.cgroup_id;
	e->skb = (__u64)skb;
	e->packet = p->packet;
	e->step_ns = step;
	e->total_ns = now - p->first_ns;
	e->netns = netns;
	e->ifindex = ifindex;
	e->len = BPF_CORE_READ(skb, len);
	e->stage = stage;
	e->first = first;
	if (f)
		e->flow = *f;
	output_event(e, sizeof(*e));
}

/* One packet at one device stage. nh: its network header (NULL: unknown). */
static __always_inline int on_stage(struct sk_buff *skb, __u8 tp, bool from_data)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct net_config *cfg;
	struct net_scratch *sc;
	struct net_pkt *p;
	struct net_flow_stats *st;
	__u64 skbaddr = (__u64)skb;
	__u64 now, in_pod, of_pod, found;
	__u32 zero = 0, netns, ifindex;
	unsigned char *nh, *l4;
	__u8 loc, stage;
	bool first = false;

	if (!dev)
		return 0;
	netns = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	p = bpf_map_lookup_elem(&net_inflight, &skbaddr);
	owners(dev, netns, &in_pod, &of_pod);
	found = in_pod ? in_pod : of_pod;
	if (!p && !found && filter_by_cgroup)
		return 0; /* nobody's we trace: the common case, cheap */
	loc = locate(p ? p->key.cgroup_id : 0, in_pod, of_pod, netns);
	sc = bpf_map_lookup_elem(&scratch, &zero);
	cfg = bpf_map_lookup_elem(&net_config, &zero);
	if (!sc || !cfg)
		return 0;
	__builtin_memset(&sc->ev, 0, sizeof(sc->ev));
	nh = from_data ? BPF_CORE_READ(skb, data) : skb_network_start(skb);
	l4 = skb_read_ip(&sc->ev.flow, skb, nh);
	skb_read_ports(&sc->ev.flow, l4);
	now = bpf_ktime_get_ns();
	stage = loc * NET_TPS + tp;
	if (p) {
		/* The same packet, or a reused skb? */
		if ((p->seen & (1U << (stage & 31))) || !same_flow(&p->key, &sc->ev.flow) ||
		    now - p->prev_ns > NET_TIMEOUT_NS) {
			net_stat(NET_STAT_RESTARTED);
			bpf_map_delete_elem(&net_inflight, &skbaddr);
			p = NULL;
			if (!found && filter_by_cgroup)
				return 0;
			loc = locate(0, in_pod, of_pod, netns);
			stage = loc * NET_TPS + tp;
		}
	}
	if (!p) {
		/* A new packet: counted once, here, under its pod's flow. */
		if (!flow_wanted(cfg, &sc->ev.flow)) {
			net_stat(NET_STAT_FILTERED);
			return 0;
		}
		p = &sc->pkt;
		__builtin_memset(p, 0, sizeof(*p));
		p->first_ns = now;
		p->prev_ns = now;
		{
			__u64 *seq = bpf_map_lookup_elem(&net_seq, &zero);

			if (!seq)
				return 0;
			*seq += 1;
			p->packet = (*seq << 10) | (bpf_get_smp_processor_id() & 1023);
		}
		p->key.cgroup_id = found;
		p->key.family = sc->ev.flow.family;
		p->key.l4proto = sc->ev.flow.l4proto;
		p->key.sport = sc->ev.flow.sport;
		p->key.dport = sc->ev.flow.dport;
		__builtin_memcpy(p->key.saddr, sc->ev.flow.saddr, 16);
		__builtin_memcpy(p->key.daddr, sc->ev.flow.daddr, 16);
		p->ip_len = sc->ev.flow.ip_len;
		first = true;
		net_stat(NET_STAT_NEW);
		st = bpf_map_lookup_elem(&net_flows, &p->key);
		if (!st) {
			struct net_flow_stats *z = bpf_map_lookup_elem(&zero_stats, &zero);

			if (!z)
				return 0;
			z->first_ns = now;
			bpf_map_update_elem(&net_flows, &p->key, z, BPF_NOEXIST);
			z->first_ns = 0;
			st = bpf_map_lookup_elem(&net_flows, &p->key);
			if (!st) {
				net_stat(NET_STAT_FLOWS_FULL);
				return 0;
			}
		}
		__sync_fetch_and_add(&st->packets, 1);
		__sync_fetch_and_add(&st->bytes, p->ip_len ? p->ip_len : BPF_CORE_READ(skb, len));
	} else {
		st = bpf_map_lookup_elem(&net_flows, &p->key);
	}
	{
		__u64 step = now - p->prev_ns;

		p->seen |= 1U << (stage & 31);
		p->prev_ns = now;
		ifindex = BPF_CORE_READ(dev, ifindex);
		p->queued = tp == NET_TP_QUEUE;
		if (p->queued) {
			p->q_netns = netns;
			p->q_ifindex = ifindex;
			p->q_loc = loc;
			BPF_CORE_READ_STR_INTO(&p->q_ifname, dev, name);
		}
		if (st) {
			st->last_ns = now;
			count_stage(st, stage, step, now - p->first_ns);
		}
		if (cfg->per_packet) {
			BPF_CORE_READ_STR_INTO(&sc->ev.ifname, dev, name);
			emit(p, &sc->ev, skb, stage, now, step, netns, ifindex, NULL, first);
		}
		/* Received into a pod's netns (its own or the peer's): delivered
		 * to that stack, the end of the path (forwarded on, it counts as a
		 * new packet). The sender's next packet of the same flow often
		 * gets this skb's memory right away: it must not look like this
		 * one going on. */
		if (tp == NET_TP_RECV && (loc == NET_LOC_POD || loc == NET_LOC_PEER)) {
			if (!first)
				bpf_map_delete_elem(&net_inflight, &skbaddr);
		} else if (first) {
			bpf_map_update_elem(&net_inflight, &skbaddr, p, BPF_ANY);
		}
	}
	return 0;
}

SEC("tracepoint/net/net_dev_queue")
int net_dev_queue(struct trace_event_raw_net_dev_template *ctx)
{
	return on_stage(ctx->skbaddr, NET_TP_QUEUE, false);
}

SEC("tracepoint/net/netif_receive_skb")
int netif_receive_skb(struct trace_event_raw_net_dev_template *ctx)
{
	return on_stage(ctx->skbaddr, NET_TP_RECV, true);
}

SEC("tracepoint/net/napi_gro_receive_entry")
int napi_gro_receive_entry(struct trace_event_raw_net_dev_rx_verbose_template *ctx)
{
	return on_stage((struct sk_buff *)ctx->skbaddr, NET_TP_GRO, true);
}

/* The driver took a queued packet. skb->dev may already be the veth's peer
 * (veth_xmit forwarded it before this fires), so the device is the one the
 * packet was queued on; only followed packets, only successful transmits. */
SEC("tracepoint/net/net_dev_xmit")
int net_dev_xmit(struct trace_event_raw_net_dev_xmit *ctx)
{
	__u64 skbaddr = (__u64)ctx->skbaddr;
	struct net_pkt *p = bpf_map_lookup_elem(&net_inflight, &skbaddr);
	struct net_flow_stats *st;
	struct net_config *cfg;
	struct net_scratch *sc;
	__u32 zero = 0;
	__u64 now, step;
	__u8 stage;

	if (!p || !p->queued || ctx->rc != 0)
		return 0;
	now = bpf_ktime_get_ns();
	stage = p->q_loc * NET_TPS + NET_TP_XMIT;
	if ((p->seen & (1U << (stage & 31))) || now - p->prev_ns > NET_TIMEOUT_NS)
		return 0;
	step = now - p->prev_ns;
	p->seen |= 1U << (stage & 31);
	p->prev_ns = now;
	p->queued = 0;
	st = bpf_map_lookup_elem(&net_flows, &p->key);
	if (st) {
		st->last_ns = now;
		count_stage(st, stage, step, now - p->first_ns);
	}
	cfg = bpf_map_lookup_elem(&net_config, &zero);
	if (!cfg || !cfg->per_packet)
		return 0;
	sc = bpf_map_lookup_elem(&scratch, &zero);
	if (!sc)
		return 0;
	__builtin_memset(&sc->ev, 0, sizeof(sc->ev));
	__builtin_memcpy(sc->ev.ifname, p->q_ifname, NET_IFNAMSIZ);
	sc->ev.flow.family = p->key.family;
	sc->ev.flow.l4proto = p->key.l4proto;
	sc->ev.flow.sport = p->key.sport;
	sc->ev.flow.dport = p->key.dport;
	sc->ev.flow.ip_len = p->ip_len;
	__builtin_memcpy(sc->ev.flow.saddr, p->key.saddr, 16);
	__builtin_memcpy(sc->ev.flow.daddr, p->key.daddr, 16);
	sc->ev.flow.protocol = p->key.family == 6 ? ETH_P_IPV6 : ETH_P_IP;
	emit(p, &sc->ev, (struct sk_buff *)ctx->skbaddr, stage, now, step, p->q_netns,
	     p->q_ifindex, NULL, false);
	return 0;
}

/* A followed packet dropped: counted on its flow, and a record with the
 * reason (the drop probe reports every drop on its own). */
SEC("tracepoint/skb/kfree_skb")
int kfree_skb(struct trace_event_raw_kfree_skb *ctx)
{
	__u64 skbaddr = (__u64)ctx->skbaddr;
	struct net_pkt *p = bpf_map_lookup_elem(&net_inflight, &skbaddr);
	struct net_flow_stats *st;
	struct net_config *cfg;
	struct net_scratch *sc;
	struct net_device *dev;
	__u32 zero = 0, reason = 0;
	__u8 has_reason = 0;
	__u64 now;

	if (!p)
		return 0;
	now = bpf_ktime_get_ns();
	if (now - p->prev_ns > NET_TIMEOUT_NS) {
		bpf_map_delete_elem(&net_inflight, &skbaddr);
		return 0;
	}
	if (bpf_core_field_exists(ctx->reason)) {
		reason = BPF_CORE_READ(ctx, reason);
		has_reason = 1;
		if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
		    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
			return 0;
	}
	net_stat(NET_STAT_DROPS);
	st = bpf_map_lookup_elem(&net_flows, &p->key);
	if (st)
		__sync_fetch_and_add(&st->drops, 1);
	cfg = bpf_map_lookup_elem(&net_config, &zero);
	sc = bpf_map_lookup_elem(&scratch, &zero);
	if (cfg && cfg->per_packet && sc) {
		struct sk_buff *skb = (struct sk_buff *)ctx->skbaddr;

		__builtin_memset(&sc->ev, 0, sizeof(sc->ev));
		dev = BPF_CORE_READ(skb, dev);
		sc->ev.location = (__u64)ctx->location;
		sc->ev.reason = reason;
		sc->ev.has_reason = has_reason;
		sc->ev.flow.family = p->key.family;
		sc->ev.flow.l4proto = p->key.l4proto;
		sc->ev.flow.sport = p->key.sport;
		sc->ev.flow.dport = p->key.dport;
		sc->ev.flow.ip_len = p->ip_len;
		__builtin_memcpy(sc->ev.flow.saddr, p->key.saddr, 16);
		__builtin_memcpy(sc->ev.flow.daddr, p->key.daddr, 16);
		sc->ev.flow.protocol = p->key.family == 6 ? ETH_P_IPV6 : ETH_P_IP;
		if (dev) {
			BPF_CORE_READ_STR_INTO(&sc->ev.ifname, dev, name);
			emit(p, &sc->ev, skb, NET_STAGE_DROP, now, now - p->prev_ns,
			     BPF_CORE_READ(dev, nd_net.net, ns.inum), BPF_CORE_READ(dev, ifindex),
			     NULL, false);
		} else {
			emit(p, &sc->ev, skb, NET_STAGE_DROP, now, now - p->prev_ns, 0, 0, NULL,
			     false);
		}
	}
	bpf_map_delete_elem(&net_inflight, &skbaddr);
	return 0;
}
