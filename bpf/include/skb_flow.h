/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* A packet's flow as the skb probes (drop, net) record it. */
#ifndef PODSCOPE_SKB_FLOW_H
#define PODSCOPE_SKB_FLOW_H

struct skb_flow {
	__u16 protocol; /* ethertype, host byte order */
	__u8 l4proto;   /* IPPROTO_*, 0 if the network header was not readable */
	__u8 family;    /* 4, 6 or 0 */
	__u8 tcp_flags;
	__u8 _pad;
	__u16 sport;    /* host byte order */
	__u16 dport;
	__u16 _pad2;
	__u32 ip_len;   /* the IP header's length of the packet (0: none) */
	__u8 saddr[16]; /* IPv4: first 4 bytes */
	__u8 daddr[16];
};

#endif
