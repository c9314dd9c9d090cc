/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* dns probe, kernel side: every message a selected task sends or receives on
 * a UDP or TCP socket with port 53 at either end (user space parses DNS from
 * it; over TCP a record is one syscall's bytes of the stream, whose messages
 * carry a two-byte length, RFC 1035 4.2.2, and user space reassembles them). */
#ifndef PODSCOPE_DNS_H
#define PODSCOPE_DNS_H
#include "event_header.h"

/* Bytes copied per message: a classic DNS message is at most 512 bytes,
 * EDNS answers are usually under 1232; longer ones are cut (and say so). */
#define DNS_DATA_MAX 1024

#define DNS_DIR_TX 1
#define DNS_DIR_RX 2

/* Which syscall moved the message (same numbering as the http probe). */
#define DNS_SYS_READ 1
#define DNS_SYS_WRITE 2
#define DNS_SYS_RECVFROM 5
#define DNS_SYS_SENDTO 6
#define DNS_SYS_RECVMSG 7
#define DNS_SYS_SENDMSG 8
#define DNS_SYS_READV 3
#define DNS_SYS_WRITEV 4
#define DNS_SYS_SENDMMSG 10
#define DNS_SYS_RECVMMSG 11

/* The probe's own counters (dns_stats, per CPU). */
#define DNS_STAT_MMSG_NOT_COPIED 0 /* sendmmsg/recvmmsg messages past the first MMSG_MAX */
#define DNS_STAT_MAX 1

struct dns_event {
	struct event_header hdr;
	__u64 sock;     /* struct sock address */
	__u32 len;      /* bytes the message had */
	__u32 captured; /* bytes of them in data[]: the first ones, in order */
	__s32 fd;
	__u8 dir;
	__u8 syscall;
	__u16 family;
	__u16 sport;    /* host byte order; for unconnected sockets the peer is unknown (0) */
	__u16 dport;
	__u8 transport; /* IPPROTO_UDP or IPPROTO_TCP */
	__u8 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 data[DNS_DATA_MAX];
};

#endif
