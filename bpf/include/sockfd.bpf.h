// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Socket lookups shared by the probes that read socket I/O from the syscall
 * tracepoints (http, dns): the socket behind an fd of the current task, read
 * with CO-RE from task->files->fdt->fd[fd], and a msghdr's iovec array. */
#pragma once

#include "podscope.bpf.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif
#ifndef S_IFMT
#define S_IFMT 00170000
#endif
#ifndef S_IFSOCK
#define S_IFSOCK 0140000
#endif

/* The file behind fd in the current task, or NULL. */
static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct files_struct *files;
	struct fdtable *fdt;
	struct file **fds;
	struct file *f = NULL;

	if (fd < 0)
		return NULL;
	files = BPF_CORE_READ(task, files);
	if (!files)
		return NULL;
	fdt = BPF_CORE_READ(files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_core_read(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	return f;
}

/* The IPv4/IPv6 socket of `protocol` behind an open file, or NULL (not a
 * socket, another family or protocol). */
static __always_inline struct sock *inet_sock_of_file(struct file *f, __u16 protocol)
{
	struct socket *sock;
	struct sock *sk;
	umode_t mode;
	__u16 family;

	if (!f)
		return NULL;
	mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return NULL;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != protocol)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	return sk;
}

/* The IPv4/IPv6 socket of `protocol` behind fd in the current task, or NULL
 * (not a socket, another family or protocol): a few reads for file I/O. */
static __always_inline struct sock *inet_sock_of_fd(long fd, __u16 protocol)
{
	return inet_sock_of_file(fd_file(fd), protocol);
}

/* Before 6.13 a file's references were an atomic_long_t f_count. */
struct file___f_count {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

/* References to an open file (fds in every process that shares it, plus
 * calls in flight in other threads). close() of an fd whose file has more
 * than one does not close the socket: a forking server's parent closing its
 * copy of the accepted fd while the child serves it. */
static __always_inline long file_refs(struct file *f)
{
	/* 6.13+: file_ref_t counts from 0 for one reference. */
	if (bpf_core_field_exists(f->f_ref))
		return BPF_CORE_READ(f, f_ref.refcnt.counter) + 1;
	return BPF_CORE_READ((struct file___f_count *)f, f_count.counter);
}

/* recvmsg/sendmsg: the iovec array comes from the user's msghdr. */
static __always_inline __u64 user_msg_iov(__u64 msg)
{
	struct user_msghdr m = {};

	if (bpf_probe_read_user(&m, sizeof(m), (void *)msg))
		return 0;
	return (__u64)m.msg_iov;
}
