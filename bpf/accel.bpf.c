// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* accelerate: TCP between local pods redirected at the socket layer.
 *
 * accel_sockops runs on the cgroup v2 root for every TCP socket of the node
 * (attached at the root so that the selection can be changed by map update
 * and a selected pod's sockets are seen whatever their container cgroup).
 * On the active and passive "established" callbacks it keeps a socket when
 *   - its own cgroup (the socket's, sk_cgrp_data: right in softirq too) or
 *     an ancestor is in accel_cgroups (the selected pods), and
 *   - its peer is local: an address in accel_addrs (every pod IP of the
 *     node) whose pod is selected as well (loopback is left alone, counted);
 * it goes into accel_socks (a sockhash keyed by the 4-tuple) and
 * accel_socks_info. Everything else is counted by reason and left alone:
 * sk_msg never runs for a socket that is not in the sockhash.
 *
 * accel_msg (sk_msg, attached to accel_socks) looks up the peer socket by
 * the reversed tuple and redirects the message into the peer's receive
 * queue (bpf_msg_redirect_hash, BPF_F_INGRESS): it skips both TCP/IP stacks,
 * the veths and the bridge. With no peer in the map the message goes the
 * normal way (SK_PASS) and is counted as passed.
 *
 * A closing socket (STATE_CB to TCP_CLOSE) leaves the sockhash by itself;
 * its info entry is removed here. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "accel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define TCP_CLOSE 7
#define E2BIG 7
#define ENOMEM 12
#define ENOSPC 28

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, ACCEL_MAX_SOCKETS);
	__type(key, struct accel_key);
	__type(value, __u64);
} accel_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ACCEL_MAX_SOCKETS);
	__type(key, struct accel_key);
	__type(value, struct accel_sock_info);
} accel_socks_info SEC(".maps");

/* Selected pods: pod-level cgroup v2 id -> 1. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ACCEL_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, __u8);
} accel_cgroups SEC(".maps");

/* Every pod address of the node (IPv4-mapped or IPv6). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ACCEL_MAX_ADDRS);
	__type(key, __u8[16]);
	__type(value, struct accel_addr_info);
} accel_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ACCEL_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, struct accel_pod_stats);
} accel_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ACCEL_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} accel_stats SEC(".maps");

static __always_inline void stat_add(__u32 which, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&accel_stats, &which);

	if (v)
		*v += n;
}

struct sock_cgroup_data___old {
	__u64 val;
} __attribute__((preserve_access_index));

struct cgroup___old {
	__u64 ancestor_ids[0];
} __attribute__((preserve_access_index));

static __always_inline struct cgroup *sock_cgroup(struct sock *sk)
{
	__u64 val;

	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	val = BPF_CORE_READ((struct sock_cgroup_data___old *)&sk->sk_cgrp_data, val);
	return (val & 3) ? NULL : (struct cgroup *)val;
}

static __always_inline __u64 cgroup_ancestor_id(struct cgroup *cgrp, int level)
{
	if (bpf_core_field_exists(cgrp->ancestors)) {
		struct cgroup *anc = NULL;

		bpf_core_read(&anc, sizeof(anc), &cgrp->ancestors[level]);
		return anc ? BPF_CORE_READ(anc, kn, id) : 0;
	} else {
		__u64 id = 0;

		bpf_core_read(&id, sizeof(id), &((struct cgroup___old *)cgrp)->ancestor_ids[level]);
		return id;
	}
}

/* The selected cgroup the socket's cgroup is (or is under), or 0. */
static __always_inline __u64 selected_cgroup(struct sock *sk)
{
	struct cgroup *cgrp = sock_cgroup(sk);
	int level;

	if (!cgrp)
		return 0;
	level = BPF_CORE_READ(cgrp, level);
	for (int i = 0; i < ACCEL_CGROUP_MAX_LEVEL; i++) {
		__u64 id;

		if (i > level)
			break;
		id = cgroup_ancestor_id(cgrp, i);
		if (!id)
			break;
		if (bpf_map_lookup_elem(&accel_cgroups, &id))
			return id;
	}
	return 0;
}

static __always_inline void map_v4(__u8 *out, __u32 addr)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &addr, 4);
}

static __always_inline bool is_loopback(const __u8 *a)
{
	bool zero10 = true;

	for (int i = 0; i < 10; i++)
		if (a[i])
			zero10 = false;
	if (!zero10)
		return false;
	if (a[10] == 0xff && a[11] == 0xff)
		return a[12] == 127;
	if (a[10] == 0 && a[11] == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0)
		return a[15] == 1;
	return false;
}

/* ops and msg carry the same fields under the same names. */
#define FILL_KEY(k, ctx, fam_ok)                                               \
	do {                                                                   \
		__builtin_memset(&(k), 0, sizeof(k));                          \
		fam_ok = true;                                                 \
		if ((ctx)->family == AF_INET) {                                \
			map_v4((k).local, (ctx)->local_ip4);                   \
			map_v4((k).remote, (ctx)->remote_ip4);                 \
		} else if ((ctx)->family == AF_INET6) {                        \
			__u32 l[4] = { (ctx)->local_ip6[0], (ctx)->local_ip6[1], \
				       (ctx)->local_ip6[2], (ctx)->local_ip6[3] }; \
			__u32 r[4] = { (ctx)->remote_ip6[0], (ctx)->remote_ip6[1], \
				       (ctx)->remote_ip6[2], (ctx)->remote_ip6[3] }; \
			__builtin_memcpy((k).local, l, 16);                    \
			__builtin_memcpy((k).remote, r, 16);                   \
		} else {                                                       \
			fam_ok = false;                                        \
		}                                                              \
		(k).lport = (ctx)->local_port;                                 \
		(k).rport = bpf_ntohl((ctx)->remote_port);                     \
	} while (0)

static __always_inline void reverse(struct accel_key *out, const struct accel_key *k)
{
	__builtin_memcpy(out->local, k->remote, 16);
	__builtin_memcpy(out->remote, k->local, 16);
	out->lport = k->rport;
	out->rport = k->lport;
	out->netns = k->netns;
}

static __always_inline void pod_add(__u64 cg, __u32 field, __u64 n)
{
	struct accel_pod_stats zero = {}, *p;

	p = bpf_map_lookup_elem(&accel_pods, &cg);
	if (!p) {
		bpf_map_update_elem(&accel_pods, &cg, &zero, BPF_NOEXIST);
		p = bpf_map_lookup_elem(&accel_pods, &cg);
		if (!p)
			return;
	}
	switch (field) {
	case 0:
		__sync_fetch_and_add(&p->sockets, n);
		break;
	case 1:
		__sync_fetch_and_add(&p->accelerated, n);
		break;
	}
}

static __always_inline void established(struct bpf_sock_ops *ops)
{
	struct accel_key k, peer;
	struct accel_sock_info info = {};
	struct accel_sock_info *pi;
	struct accel_addr_info *ai;
	struct bpf_sock *bsk;
	struct sock *sk;
	bool fam_ok;
	__u64 cg;
	long err;

	stat_add(ACCEL_STAT_ESTABLISHED, 1);
	bsk = ops->sk;
	if (!bsk)
		return;
	/* A BTF pointer: CO-RE reads through it are allowed (ops->sk is not). */
	sk = (struct sock *)bpf_skc_to_tcp_sock(bsk);
	if (!sk)
		return;
	FILL_KEY(k, ops, fam_ok);
	if (!fam_ok) {
		stat_add(ACCEL_STAT_NOT_INET, 1);
		return;
	}
	cg = selected_cgroup(sk);
	if (!cg) {
		stat_add(ACCEL_STAT_NOT_SELECTED, 1);
		return;
	}
	if (is_loopback(k.remote)) {
		/* Not accelerated: on Linux 6.18.44 an open loopback connection
		 * stalled after --off took its sockets out of the sockhash (no
		 * wake-up; the programs stayed loaded until it closed), while
		 * pod-to-pod ones went back to the stack cleanly. Counted. The
		 * key would carry the netns cookie (loopback tuples repeat in
		 * every pod) if this is ever turned back on. */
		stat_add(ACCEL_STAT_LOOPBACK, 1);
		return;
	} else {
		ai = bpf_map_lookup_elem(&accel_addrs, k.remote);
		if (!ai) {
			stat_add(ACCEL_STAT_PEER_NOT_LOCAL, 1);
			return;
		}
		if (!ai->selected) {
			stat_add(ACCEL_STAT_PEER_NOT_SELECTED, 1);
			return;
		}
	}
	info.pod_cgroup = cg;
	if (bpf_map_update_elem(&accel_socks_info, &k, &info, BPF_ANY)) {
		stat_add(ACCEL_STAT_MAP_FULL, 1);
		return;
	}
	err = bpf_sock_hash_update(ops, &accel_socks, &k, BPF_ANY);
	if (err) {
		bpf_map_delete_elem(&accel_socks_info, &k);
		stat_add((err == -ENOMEM || err == -E2BIG || err == -ENOSPC) ? ACCEL_STAT_MAP_FULL
									     : ACCEL_STAT_MAP_ERROR,
			 1);
		return;
	}
	/* To drop the info entry when the socket closes. */
	bpf_sock_ops_cb_flags_set(ops, ops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	stat_add(ACCEL_STAT_ADDED, 1);
	pod_add(cg, 0, 1);
	reverse(&peer, &k);
	pi = bpf_map_lookup_elem(&accel_socks_info, &peer);
	if (pi) {
		/* The second end to arrive counts the connection, once. */
		struct accel_sock_info *mine = bpf_map_lookup_elem(&accel_socks_info, &k);

		pi->accelerated = 1;
		if (mine)
			mine->accelerated = 1;
		stat_add(ACCEL_STAT_ACCELERATED, 1);
		pod_add(cg, 1, 1);
	}
}

SEC("sockops")
int accel_sockops(struct bpf_sock_ops *ops)
{
	switch (ops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		established(ops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (ops->args[1] == TCP_CLOSE) {
			struct accel_key k;
			bool fam_ok;

			FILL_KEY(k, ops, fam_ok);
			if (!fam_ok)
				break;
			/* Loopback sockets never join (see established()), so no
			 * key needs the netns cookie: bpf_get_netns_cookie() in
			 * sockops and sk_msg is 5.15+, and its use kept the whole
			 * object from loading on 5.10. */
			if (bpf_map_delete_elem(&accel_socks_info, &k) == 0)
				stat_add(ACCEL_STAT_CLOSED, 1);
		}
		break;
	}
	return 1;
}

SEC("sk_msg")
int accel_msg(struct sk_msg_md *msg)
{
	struct accel_key k, peer;
	struct accel_sock_info *info;
	struct accel_pod_stats *p;
	bool fam_ok;
	__u64 size = msg->size;

	FILL_KEY(k, msg, fam_ok);
	if (!fam_ok)
		return SK_PASS;
	reverse(&peer, &k);
	info = bpf_map_lookup_elem(&accel_socks_info, &k);
	p = info ? bpf_map_lookup_elem(&accel_pods, &info->pod_cgroup) : NULL;
	if (bpf_msg_redirect_hash(msg, &accel_socks, &peer, BPF_F_INGRESS) == SK_PASS) {
		stat_add(ACCEL_STAT_MSGS, 1);
		stat_add(ACCEL_STAT_BYTES, size);
		if (info) {
			__sync_fetch_and_add(&info->msgs, 1);
			__sync_fetch_and_add(&info->bytes, size);
		}
		if (p) {
			__sync_fetch_and_add(&p->msgs, 1);
			__sync_fetch_and_add(&p->bytes, size);
		}
	} else {
		stat_add(ACCEL_STAT_PASSED_MSGS, 1);
		stat_add(ACCEL_STAT_PASSED_BYTES, size);
		if (info) {
			__sync_fetch_and_add(&info->passed_msgs, 1);
			__sync_fetch_and_add(&info->passed_bytes, size);
		}
		if (p) {
			__sync_fetch_and_add(&p->passed_msgs, 1);
			__sync_fetch_and_add(&p->passed_bytes, size);
		}
	}
	return SK_PASS;
}

/* A verdict for data that arrives the normal way (from the network stack)
 * on a mapped socket: pass it to the socket. It changes nothing in the data;
 * its presence is the work-around for the sockmap receive regression of
 * Linux 6.6.128+/6.12.75+/6.18.14+/6.19 (commit 929e30f93125): without a
 * stream verdict a mapped socket reports FIONREAD 0 for such data and can
 * miss epoll wake-ups; with one, the kernel takes the receive path that
 * accounts for it (see docs/accelerate.md for the evidence). */
SEC("sk_skb/stream_verdict")
int accel_skb_pass(struct __sk_buff *skb)
{
	return SK_PASS;
}
