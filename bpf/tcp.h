/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* tcp probe: connect, accept, close (with lifetime and bytes), failed connects,
 * retransmits and resets, for IPv4 and IPv6. */
#ifndef PODSCOPE_TCP_H
#define PODSCOPE_TCP_H
#include "event_header.h"

#define TCP_KIND_CONNECT 1        /* active open reached ESTABLISHED */
#define TCP_KIND_ACCEPT 2         /* accept() returned a connection */
#define TCP_KIND_CLOSE 3          /* a connection we saw open was closed */
#define TCP_KIND_CONNECT_FAILED 4 /* active open went SYN_SENT -> CLOSE */
#define TCP_KIND_RETRANSMIT 5
#define TCP_KIND_RESET_SENT 6
#define TCP_KIND_RESET_RECEIVED 7

#define TCP_ROLE_UNKNOWN 0
#define TCP_ROLE_CLIENT 1 /* we connected */
#define TCP_ROLE_SERVER 2 /* we accepted */

struct tcp_event {
	struct event_header hdr; /* the socket's owner, even when raised in softirq */
	__u8 kind;
	__u8 role;
	__u8 state;      /* TCP state when the event happened */
	__u8 _pad;
	__u16 family;    /* AF_INET or AF_INET6 */
	__u16 sport;     /* host byte order */
	__u16 dport;
	__u16 _pad2;
	__s32 error;     /* sk_err on connect_failed/close, else 0 */
	__u8 saddr[16];  /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u64 duration_ns; /* close: lifetime since connect/accept */
	__u64 tx_bytes;    /* close: payload bytes the owner sent */
	__u64 rx_bytes;    /* close: payload bytes the owner received */
	__u32 retransmits; /* close: total retransmitted segments */
	__u32 _pad3;
};

#endif
