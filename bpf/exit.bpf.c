// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* exit probe (exitsnoop): process exits with exit code or signal and lifetime. */
#include "podscope.bpf.h"
#include "exit.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct exit_event _exit_event_type = {};

SEC("tracepoint/sched/sched_process_exit")
int exit_process(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct task_struct *task;
	struct exit_event *e;

	/* One event per process: the thread-group leader's exit. */
	if ((__u32)pid_tgid != pid_tgid >> 32)
		return 0;
	if (!should_trace_current())
		return 0;
	e = reserve_event(sizeof(*e));
	if (!e)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	fill_header(&e->hdr);
	e->lifetime_ns = e->hdr.ts_ns - BPF_CORE_READ(task, start_time);
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->_pad = 0;
	submit_event(e);
	return 0;
}
