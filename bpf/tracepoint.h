/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* tracepoint probe: the raw record of any tracepoint (`tp:SUBSYSTEM:EVENT`),
 * copied after the pod filter and the --filter predicates; user space decodes
 * its fields from the event's tracefs `format` file. */
#ifndef PODSCOPE_TRACEPOINT_H
#define PODSCOPE_TRACEPOINT_H
#include "event_header.h"

/* Bytes of a record copied at most (a power of two: offsets are masked). */
#define TP_DATA_MAX 1024
/* --filter comparisons per tracepoint: AND-ed within a group, groups OR-ed. */
#define TP_PRED_MAX 4
/* Longest string a filter compares, with its NUL. */
#define TP_STR_MAX 32

/* What a predicate reads at `offset`. */
#define TP_FIELD_UNSIGNED 1 /* an integer of `size` bytes */
#define TP_FIELD_SIGNED 2
#define TP_FIELD_CHARS 3    /* char[N] at offset */
#define TP_FIELD_DATA_LOC 4 /* __data_loc char[]: a u32 (len << 16 | offset) at offset */
#define TP_FIELD_REL_LOC 5  /* __rel_loc char[]: offset counted from the end of the u32 */

#define TP_OP_EQ 1
#define TP_OP_NE 2
#define TP_OP_LT 3
#define TP_OP_LE 4
#define TP_OP_GT 5
#define TP_OP_GE 6

struct tp_pred {
	__u16 offset;
	__u8 size;
	__u8 field;  /* TP_FIELD_* */
	__u8 op;     /* TP_OP_*; strings: EQ and NE only */
	__u8 group;  /* `a && b || c`: a and b in group 0, c in 1; groups in order */
	__u8 pad[2];
	__u64 value; /* integers: the value (signed ones two's complement) */
	char str[TP_STR_MAX];
};

/* Per tracepoint, keyed by its event id. */
/* __data_loc/__rel_loc fields whose data is copied with the record. */
#define TP_LOC_MAX 4

struct tp_conf {
	__u32 fixed_bytes; /* the fixed part of the record (from the format file) */
	__u32 npreds;
	__u16 loc_offset[TP_LOC_MAX]; /* where each __data_loc/__rel_loc u32 is */
	__u8 loc_rel[TP_LOC_MAX];     /* 1: __rel_loc (counted from the end of the u32) */
	__u32 nlocs;
	struct tp_pred preds[TP_PRED_MAX];
};

struct tp_event {
	struct event_header hdr;
	__u32 type; /* the event id: which tracepoint */
	__u32 size; /* bytes of data copied */
	__u8 data[TP_DATA_MAX];
};

/* The probe's own counters (per-CPU array `tp_counts`). */
#define TP_SEEN 0     /* records that passed the pod filter */
#define TP_FILTERED 1 /* of those, cut in the kernel by --filter */
#define TP_UNKNOWN 2  /* records of an instance with no tp_conf (never expected) */
#define TP_TRUNCATED 3 /* records longer than TP_DATA_MAX: cut */
#define TP_COUNT_MAX 4

#endif
