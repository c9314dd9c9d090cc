/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* A packet's flow from its own headers (IPv4/IPv6, TCP/UDP ports, TCP
 * flags): shared by the probes that look at sk_buffs (drop, net). */
#ifndef PODSCOPE_SKB_FLOW_BPF_H
#define PODSCOPE_SKB_FLOW_BPF_H

#include "skb_flow.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define SKB_IPV6_EXT_MAX 4

/* The network header as the kernel set it (NULL if unset). On the receive
 * path before the IP layer (netif_receive_skb) it may be stale or unset:
 * there skb->data is the network header (the device pulled its own). */
static __always_inline unsigned char *skb_network_start(struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);

	if (!head || nh == (__u16)~0U)
		return NULL;
	return head + nh;
}

/* Addresses, the transport protocol and the IP length from the IP header at
 * nh; returns where the transport header starts (found from the IP header:
 * transport_header is not set yet on the receive path), or NULL when there
 * are no ports to read. */
static __always_inline unsigned char *skb_read_ip(struct skb_flow *f, struct sk_buff *skb,
						  unsigned char *nh)
{
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	unsigned char *l4 = NULL;

	f->protocol = proto;
	if (!nh)
		return NULL;
	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), nh))
			return NULL;
		if (ip.version != 4)
			return NULL;
		f->family = 4;
		f->l4proto = ip.protocol;
		f->ip_len = bpf_ntohs(ip.tot_len);
		__builtin_memcpy(f->saddr, &ip.saddr, 4);
		__builtin_memcpy(f->daddr, &ip.daddr, 4);
		/* Later fragments carry no ports. */
		if (bpf_ntohs(ip.frag_off) & 0x1fff)
			return NULL;
		l4 = nh + ip.ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), nh))
			return NULL;
		if (ip6.version != 6)
			return NULL;
		f->family = 6;
		f->l4proto = ip6.nexthdr;
		f->ip_len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
		__builtin_memcpy(f->saddr, &ip6.saddr, 16);
		__builtin_memcpy(f->daddr, &ip6.daddr, 16);
		l4 = nh + sizeof(ip6);
		/* The first few extension headers (hop-by-hop options on MLD
		 * reports, routing, destination options, fragment). */
#pragma unroll
		for (int i = 0; i < SKB_IPV6_EXT_MAX; i++) {
			__u8 ext[2];

			if (f->l4proto != 0 && f->l4proto != 43 && f->l4proto != 60 &&
			    f->l4proto != 44)
				break;
			if (bpf_probe_read_kernel(ext, sizeof(ext), l4))
				return NULL;
			if (f->l4proto == 44) {
				__u16 frag = 0;

				bpf_probe_read_kernel(&frag, sizeof(frag), l4 + 2);
				f->l4proto = ext[0];
				/* Later fragments carry no ports. */
				if (bpf_ntohs(frag) & 0xfff8)
					return NULL;
				l4 += 8;
			} else {
				f->l4proto = ext[0];
				l4 += (ext[1] + 1) * 8;
			}
		}
	} else {
		return NULL;
	}
	return l4;
}

/* TCP and UDP ports (and TCP flags) at l4. */
static __always_inline void skb_read_ports(struct skb_flow *f, unsigned char *l4)
{
	if (!l4)
		return;
	if (f->l4proto == IPPROTO_TCP) {
		struct tcphdr th;

		if (bpf_probe_read_kernel(&th, sizeof(th), l4))
			return;
		f->sport = bpf_ntohs(th.source);
		f->dport = bpf_ntohs(th.dest);
		/* flags byte: FIN SYN RST PSH ACK URG ECE CWR */
		bpf_probe_read_kernel(&f->tcp_flags, 1, l4 + 13);
	} else if (f->l4proto == IPPROTO_UDP) {
		struct udphdr uh;

		if (bpf_probe_read_kernel(&uh, sizeof(uh), l4))
			return;
		f->sport = bpf_ntohs(uh.source);
		f->dport = bpf_ntohs(uh.dest);
	}
}

#endif
