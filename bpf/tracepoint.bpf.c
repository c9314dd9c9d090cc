// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* tracepoint probe: one instance of this program per tracepoint asked for,
 * each told its event id (tracefs `events/SUBSYS/EVENT/id`) in `tp_type`
 * before load; the instances share every map. The record's own common_type
 * cannot tell them apart: the kernel overwrites a BPF program's view of the
 * first 8 bytes (the common fields) with a pt_regs pointer; and
 * bpf_get_attach_cookie() needs Linux 5.15. After the pod filter of the
 * current task, the --filter predicates of that event are evaluated on the
 * copied record, and only records that pass reach the ring. */
#include "podscope.bpf.h"
#include "tracepoint.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The event id of the tracepoint this instance is attached to. */
const volatile __u32 tp_type = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct tp_conf);
} tp_conf SEC(".maps");

/* Records are built here: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tp_event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TP_COUNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tp_counts SEC(".maps");

struct tp_event _tp_event_type = {};
struct tp_conf _tp_conf_type = {};

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&tp_counts, &which);
	if (v)
		*v += 1;
}

/* Does the string at data[off] equal p->str? Offsets are masked into the
 * record, so a bad one compares garbage instead of failing verification. */
static __always_inline bool str_equal(struct tp_event *e, __u32 off, struct tp_pred *p)
{
	for (int i = 0; i < TP_STR_MAX; i++) {
		char a = e->data[(off + i) & (TP_DATA_MAX - 1)];
		char b = p->str[i];

		if (a != b)
			return false;
		if (a == 0)
			return true;
	}
	return true;
}

static __always_inline bool pred_holds(struct tp_event *e, struct tp_pred *p)
{
	__u32 off = p->offset & (TP_DATA_MAX - 1);
	__u64 v = 0;
	bool eq;

	if (p->field == TP_FIELD_CHARS || p->field == TP_FIELD_DATA_LOC ||
	    p->field == TP_FIELD_REL_LOC) {
		if (p->field != TP_FIELD_CHARS) {
			__u32 loc = 0;

			if (off > TP_DATA_MAX - 4)
				return false;
			bpf_probe_read_kernel(&loc, sizeof(loc), &e->data[off]);
			off = (loc & 0xffff) + (p->field == TP_FIELD_REL_LOC ? off + 4 : 0);
			if (off >= e->size)
				return false;
		}
		eq = str_equal(e, off, p);
		return p->op == TP_OP_NE ? !eq : eq;
	}
	if (off > TP_DATA_MAX - 8)
		return false;
	bpf_probe_read_kernel(&v, sizeof(v), &e->data[off]);
	switch (p->size) {
	case 1:
		v &= 0xff;
		if (p->field == TP_FIELD_SIGNED)
			v = (__u64)(__s64)(__s8)v;
		break;
	case 2:
		v &= 0xffff;
		if (p->field == TP_FIELD_SIGNED)
			v = (__u64)(__s64)(__s16)v;
		break;
	case 4:
		v &= 0xffffffff;
		if (p->field == TP_FIELD_SIGNED)
			v = (__u64)(__s64)(__s32)v;
		break;
	default:
		break;
	}
	if (p->field == TP_FIELD_SIGNED) {
		__s64 a = (__s64)v, b = (__s64)p->value;

		switch (p->op) {
		case TP_OP_EQ: return a == b;
		case TP_OP_NE: return a != b;
		case TP_OP_LT: return a < b;
		case TP_OP_LE: return a <= b;
		case TP_OP_GT: return a > b;
		case TP_OP_GE: return a >= b;
		}
		return false;
	}
	switch (p->op) {
	case TP_OP_EQ: return v == p->value;
	case TP_OP_NE: return v != p->value;
	case TP_OP_LT: return v < p->value;
	case TP_OP_LE: return v <= p->value;
	case TP_OP_GT: return v > p->value;
	case TP_OP_GE: return v >= p->value;
	}
	return false;
}

SEC("tracepoint")
int tp_record(void *ctx)
{
	struct tp_event *e;
	struct tp_conf *c;
	__u32 zero = 0, key = tp_type;
	__u64 n;

	if (!should_trace_current())
		return 0;
	c = bpf_map_lookup_elem(&tp_conf, &key);
	if (!c) {
		count(TP_UNKNOWN);
		return 0;
	}
	count(TP_SEEN);
	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	/* The record is its fixed part and, after it, the data of its
	 * __data_loc fields: copy up to the end of the last one. */
	n = c->fixed_bytes;
	for (int i = 0; i < TP_LOC_MAX; i++) {
		__u32 loc = 0, end;

		if (i >= c->nlocs)
			break;
		bpf_probe_read_kernel(&loc, sizeof(loc), (void *)ctx + c->loc_offset[i]);
		end = (loc & 0xffff) + (loc >> 16);
		if (c->loc_rel[i])
			end += c->loc_offset[i] + 4;
		if (end > n)
			n = end;
	}
	if (n > TP_DATA_MAX) {
		count(TP_TRUNCATED);
		n = TP_DATA_MAX;
	}
	if (n < 8)
		n = 8;
	/* Keep the compiler from folding the bound into a copy of n. */
	barrier_var(n);
	if (n > TP_DATA_MAX)
		return 0;
	bpf_probe_read_kernel(e->data, n, ctx);
	e->type = key;
	e->size = n;
	/* The record passes when every predicate of some group holds. */
	{
		bool ok = true; /* the current group holds so far */
		__u8 group = 0;

		for (int i = 0; i < TP_PRED_MAX; i++) {
			struct tp_pred *p;

			if (i >= c->npreds)
				break;
			p = &c->preds[i];
			if (p->group != group) {
				if (ok)
					break;
				group = p->group;
				ok = true;
			}
			if (ok && !pred_holds(e, p))
				ok = false;
		}
		if (!ok) {
			count(TP_FILTERED);
			return 0;
		}
	}
	fill_header(&e->hdr);
	{
		__u64 total = offsetof(struct tp_event, data) + (__u64)e->size;

		barrier_var(total);
		if (total > sizeof(*e))
			return 0;
		output_event(e, total);
	}
	return 0;
}
