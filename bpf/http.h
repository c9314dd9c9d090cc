/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* http probe, kernel side: the first bytes of each message a selected task
 * moves over a TCP socket (user space parses HTTP/1.x and HTTP/2 from them), and the
 * socket's close. */
#ifndef PODSCOPE_HTTP_H
#define PODSCOPE_HTTP_H
#include "event_header.h"

/* Largest capture per message; the setting (capture_bytes) is at most this. */
#define HTTP_DATA_MAX 16384

#define HTTP_KIND_DATA 1  /* a read or write on a socket */
#define HTTP_KIND_CLOSE 2 /* close() of a socket that carried HTTP */

#define HTTP_DIR_TX 1 /* the task wrote (sent) */
#define HTTP_DIR_RX 2 /* the task read (received) */

/* What the socket was sniffed as (include/sniff.bpf.h). */
#define HTTP_PROTO_HTTP1 1
#define HTTP_PROTO_H2 2

/* Which syscall moved the data. */
#define HTTP_SYS_READ 1
#define HTTP_SYS_WRITE 2
#define HTTP_SYS_READV 3
#define HTTP_SYS_WRITEV 4
#define HTTP_SYS_RECVFROM 5
#define HTTP_SYS_SENDTO 6
#define HTTP_SYS_RECVMSG 7
#define HTTP_SYS_SENDMSG 8
#define HTTP_SYS_SENDFILE 9 /* bytes only: the payload never passes user memory */

/* The probe's own counters (http_stats per-CPU array). */
#define HTTP_STAT_NOT_HTTP 0    /* connections sniffed as another protocol: payload no longer copied */
#define HTTP_STAT_OTHER_BYTES 1 /* bytes moved on those connections (counted, not copied) */
#define HTTP_STAT_MAX 2

struct http_event {
	struct event_header hdr;
	__u64 sock;     /* struct sock address: the connection's identity while it lives */
	__u64 seq;      /* bytes this direction carried before this message (holes = lost events) */
	__u32 len;      /* bytes the syscall moved */
	__u32 captured; /* bytes of them in data[] (the first ones) */
	__s32 fd;
	__u8 kind;
	__u8 dir;
	__u8 syscall;
	__u8 proto;     /* HTTP_PROTO_*: what the connection's first message was sniffed as */
	__u16 family;   /* AF_INET or AF_INET6 */
	__u16 sport;    /* host byte order */
	__u16 dport;
	__u16 _pad2;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u8 data[HTTP_DATA_MAX];
};

#endif
