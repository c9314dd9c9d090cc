/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* tls probe, kernel side: the plaintext of OpenSSL's SSL_read/SSL_write
 * (and their _ex forms) and of Go's crypto/tls (*Conn).Read/Write of
 * selected tasks, with the socket the call used.
 * The record has the shape of the http probe's, so user space parses it the
 * same way (podscope-proto), marked as TLS. */
#ifndef PODSCOPE_TLS_H
#define PODSCOPE_TLS_H
#include "event_header.h"

/* Largest plaintext capture per call; the setting (capture_bytes) is at most this. */
#define TLS_DATA_MAX 16384

#define TLS_KIND_DATA 1  /* plaintext an SSL call moved */
#define TLS_KIND_CLOSE 2 /* close() of a socket whose plaintext was HTTP */

#define TLS_DIR_TX 1 /* SSL_write: the task sent */
#define TLS_DIR_RX 2 /* SSL_read: the task received */

/* Which library call moved the plaintext. */
#define TLS_FN_SSL_READ 1
#define TLS_FN_SSL_WRITE 2
#define TLS_FN_SSL_READ_EX 3
#define TLS_FN_SSL_WRITE_EX 4
#define TLS_FN_HANDSHAKE 5 /* SSL_do_handshake: only teaches which socket an SSL* uses */
#define TLS_FN_GO_READ 6   /* Go's crypto/tls.(*Conn).Read */
#define TLS_FN_GO_WRITE 7  /* Go's crypto/tls.(*Conn).Write */

/* How the socket of a call was found (tls_stats per-CPU array). */
#define TLS_STAT_FD_SYSCALL 0  /* a socket syscall made inside the call */
#define TLS_STAT_FD_SSL 1      /* no syscall: the socket this SSL* used before */
#define TLS_STAT_FD_THREAD 2   /* neither: the thread's last TLS socket */
#define TLS_STAT_NO_SOCKET 3   /* none known: the call's plaintext was not reported */
#define TLS_STAT_NOT_HTTP 4    /* connections whose plaintext is another protocol: not copied */
#define TLS_STAT_OTHER_BYTES 5 /* plaintext bytes on those (counted, not copied) */
#define TLS_STAT_EXEC_FULL 6   /* execs of selected tasks not queued for a library scan */
#define TLS_STAT_FD_GO 7       /* Go: the descriptor under the *tls.Conn */
#define TLS_STAT_MAX 8

#define TLS_PROTO_HTTP1 1
#define TLS_PROTO_H2 2
#define TLS_PROTO_DNS 3 /* DNS over TLS (port 853, RFC 7858): the DNS-over-TCP stream */

struct tls_event {
	struct event_header hdr;
	__u64 sock;     /* struct sock address: the connection's identity while it lives */
	__u64 seq;      /* plaintext bytes this direction carried before this call */
	__u32 len;      /* plaintext bytes the call moved */
	__u32 captured; /* bytes of them in data[] (the first ones) */
	__s32 fd;
	__u8 kind;
	__u8 dir;
	__u8 fn;        /* TLS_FN_* */
	__u8 fd_source; /* TLS_STAT_FD_* : how the socket was found */
	__u16 family;   /* AF_INET or AF_INET6 */
	__u16 sport;    /* host byte order */
	__u16 dport;
	__u8 proto;     /* TLS_PROTO_*: what the plaintext was sniffed as */
	__u8 _pad2;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u8 data[TLS_DATA_MAX];
};

#endif
