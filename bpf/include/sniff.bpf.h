/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Protocol sniffing on a connection's first captured message, shared by the
 * probes that copy payload (http; tls after its plaintext is captured).
 *
 * sniff_proto(p, n) looks at the first n bytes of a message that are already
 * in BPF memory (a map value: the fixed-offset reads of the first 24 bytes
 * must be in bounds whatever n is) and says:
 *   SNIFF_HTTP1  an HTTP/1.x request line or status line;
 *   SNIFF_H2     the HTTP/2 client preface, or (a connection seen after it
 *                opened) one or two plausible HTTP/2 frame headers;
 *   SNIFF_MORE   too short to tell yet (the caller may try the next message);
 *   SNIFF_OTHER  anything else: stop copying payload for this connection.
 *
 * The frame-header test is deliberately strict, because a false positive
 * costs payload copies on a connection that is not HTTP/2: a known frame type
 * (0..9), a length within the default SETTINGS_MAX_FRAME_SIZE (16384), only
 * the flags that type defines, the reserved bit clear, stream 0 exactly for
 * the connection-level frames and non-zero for the others, and the fixed
 * lengths of SETTINGS/PING/WINDOW_UPDATE/RST_STREAM/PRIORITY. When the
 * capture holds the next frame header too, it must pass the same test.
 * Connections whose peers raised SETTINGS_MAX_FRAME_SIZE and were joined in
 * the middle of a large frame are not recognised (PROTO_OTHER). */
#ifndef PODSCOPE_SNIFF_BPF_H
#define PODSCOPE_SNIFF_BPF_H

#define SNIFF_MORE 0
#define SNIFF_HTTP1 1
#define SNIFF_H2 2
#define SNIFF_OTHER 3

#define SNIFF_H2_PREFACE_LEN 24
#define SNIFF_H2_MAX_FRAME 16384

#define SNIFF_W(a, b, c, d) ((__u32)(a) | ((__u32)(b) << 8) | ((__u32)(c) << 16) | ((__u32)(d) << 24))

static __always_inline __u32 sniff_word(const __u8 *p)
{
	return p[0] | (p[1] << 8) | (p[2] << 16) | ((__u32)p[3] << 24);
}

/* An HTTP/1.x request line or status line starts with one of these. */
static __always_inline bool sniff_http1(const __u8 *p)
{
	__u32 w = sniff_word(p);

	return w == SNIFF_W('G', 'E', 'T', ' ') || w == SNIFF_W('P', 'O', 'S', 'T') ||
	       w == SNIFF_W('P', 'U', 'T', ' ') || w == SNIFF_W('H', 'E', 'A', 'D') ||
	       w == SNIFF_W('D', 'E', 'L', 'E') || w == SNIFF_W('P', 'A', 'T', 'C') ||
	       w == SNIFF_W('O', 'P', 'T', 'I') || w == SNIFF_W('C', 'O', 'N', 'N') ||
	       w == SNIFF_W('T', 'R', 'A', 'C') || w == SNIFF_W('H', 'T', 'T', 'P');
}

/* "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
static __always_inline bool sniff_h2_preface(const __u8 *p)
{
	return sniff_word(p) == SNIFF_W('P', 'R', 'I', ' ') &&
	       sniff_word(p + 4) == SNIFF_W('*', ' ', 'H', 'T') &&
	       sniff_word(p + 8) == SNIFF_W('T', 'P', '/', '2') &&
	       sniff_word(p + 12) == SNIFF_W('.', '0', '\r', '\n') &&
	       sniff_word(p + 16) == SNIFF_W('\r', '\n', 'S', 'M') &&
	       sniff_word(p + 20) == SNIFF_W('\r', '\n', '\r', '\n');
}

/* The frame's payload length if p[0..9] is a plausible HTTP/2 frame header,
 * else -1. */
static __always_inline int sniff_h2_frame(const __u8 *p)
{
	__u32 len = ((__u32)p[0] << 16) | ((__u32)p[1] << 8) | p[2];
	__u8 type = p[3], flags = p[4];
	__u32 sid = ((__u32)(p[5] & 0x7f) << 24) | ((__u32)p[6] << 16) | ((__u32)p[7] << 8) | p[8];
	__u8 allowed;

	if (p[5] & 0x80 || len > SNIFF_H2_MAX_FRAME)
		return -1;
	switch (type) {
	case 0: /* DATA: END_STREAM, PADDED */
		allowed = 0x01 | 0x08;
		if (!sid)
			return -1;
		break;
	case 1: /* HEADERS: END_STREAM, END_HEADERS, PADDED, PRIORITY */
		allowed = 0x01 | 0x04 | 0x08 | 0x20;
		if (!sid || !len)
			return -1;
		break;
	case 2: /* PRIORITY */
		allowed = 0;
		if (!sid || len != 5)
			return -1;
		break;
	case 3: /* RST_STREAM */
		allowed = 0;
		if (!sid || len != 4)
			return -1;
		break;
	case 4: /* SETTINGS: ACK */
		allowed = 0x01;
		if (sid || len % 6 || ((flags & 1) && len))
			return -1;
		break;
	case 5: /* PUSH_PROMISE: END_HEADERS, PADDED */
		allowed = 0x04 | 0x08;
		if (!sid || len < 4)
			return -1;
		break;
	case 6: /* PING: ACK */
		allowed = 0x01;
		if (sid || len != 8)
			return -1;
		break;
	case 7: /* GOAWAY */
		allowed = 0;
		if (sid || len < 8)
			return -1;
		break;
	case 8: /* WINDOW_UPDATE */
		allowed = 0;
		if (len != 4)
			return -1;
		break;
	case 9: /* CONTINUATION: END_HEADERS */
		allowed = 0x04;
		if (!sid || !len)
			return -1;
		break;
	default:
		return -1;
	}
	if (flags & ~allowed)
		return -1;
	return len;
}

/* See the top of this file. p points at BPF memory of which the first n bytes
 * were captured (and at least 24 are readable). */
static __always_inline int sniff_proto(const __u8 *p, __u32 n)
{
	__u8 next[9];
	__u32 off;
	int len;

	if (n < 4)
		return SNIFF_MORE;
	if (sniff_http1(p))
		return SNIFF_HTTP1;
	if (sniff_word(p) == SNIFF_W('P', 'R', 'I', ' ')) {
		if (n < SNIFF_H2_PREFACE_LEN)
			return SNIFF_MORE;
		return sniff_h2_preface(p) ? SNIFF_H2 : SNIFF_OTHER;
	}
	if (n < 9)
		return SNIFF_MORE;
	len = sniff_h2_frame(p);
	if (len < 0)
		return SNIFF_OTHER;
	off = 9 + (__u32)len;
	if (off + 9 > n)
		return SNIFF_H2;
	/* A helper read: a variable offset needs no verifier bounds; it is
	 * within the n captured bytes anyway. */
	if (bpf_probe_read_kernel(next, sizeof(next), p + off))
		return SNIFF_OTHER;
	return sniff_h2_frame(next) < 0 ? SNIFF_OTHER : SNIFF_H2;
}

#endif
