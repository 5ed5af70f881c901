/* exec probe family, entry side: every execve/execveat call, failed ones included.
 *
 * At entry the filename and argv are copied (after a successful exec the caller's memory is
 * gone) and sent as an exec_args_event; at exit (exec_exit.bpf.c) the result follows as an
 * exec_event, and userspace joins the two by pid. */
#include "common.h"

/* Staging area: an exec_args_event is far larger than the 512-byte BPF stack. */
BPF_PERCPU_ARRAY(exec_scratch, struct exec_args_event, 1);
/* Thread groups whose argv entry could not read whole (EXEC_ARGV_TRUNCATED or _UNREADABLE):
 * their exit reads it again from the new image's stack. Only these pay for that. */
BPF_TABLE("lru_hash", u32, u32, argv_incomplete, 10240);

#define ARGS_LAST_START (ARGV_BUF_LEN - ARGV_ARG_READ)

static __always_inline void read_argv(struct exec_args_event *e, const char *const *argv)
{
	const char *arg = NULL;
	u32 i;

	for (i = 0; i < ARGV_MAX_ARGS; i++) {
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i])) {
			e->flags |= EXEC_ARGV_UNREADABLE;
			return;
		}
		if (!arg)
			return;
		if (e->args_size > ARGS_LAST_START) {
			e->flags |= EXEC_ARGV_TRUNCATED;  /* out of room for another argument */
			return;
		}
		long n = bpf_probe_read_user_str(&e->args[e->args_size], ARGV_ARG_READ, arg);
		if (n <= 0) {
			e->flags |= EXEC_ARGV_UNREADABLE;
			return;
		}
		/* A full read keeps ARGV_ARG_READ - 1 bytes: the argument was longer unless the
		 * byte after them is its terminator. */
		if (n == ARGV_ARG_READ) {
			char next = 0;
			bpf_probe_read_user(&next, 1, arg + ARGV_ARG_READ - 1);
			if (next)
				e->flags |= EXEC_ARGV_TRUNCATED;
		}
		e->args_size += n;
		e->argc = i + 1;
	}
	if (!bpf_probe_read_user(&arg, sizeof(arg), &argv[ARGV_MAX_ARGS]) && arg)
		e->flags |= EXEC_ARGV_TRUNCATED;
}

static __always_inline int exec_enter(const char *filename, const char *const *argv, u32 flags)
{
	u32 zero = 0;
	struct exec_args_event *e = exec_scratch.lookup(&zero);

	if (!e)
		return 0;
	fill_header(&e->hdr, EVENT_EXEC_ARGS);
	e->argc = 0;
	e->args_size = 0;
	e->flags = flags;
	long n = bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);
	if (n == sizeof(e->filename)) {
		e->flags |= EXEC_FILENAME_TRUNCATED;
	} else if (n < 0) {
		e->filename[0] = 0;
		e->flags |= EXEC_FILENAME_UNREADABLE;
	}
	read_argv(e, argv);
	if (e->flags & (EXEC_ARGV_TRUNCATED | EXEC_ARGV_UNREADABLE)) {
		u32 tgid = e->hdr.pid;
		argv_incomplete.update(&tgid, &e->flags);
	}

	u64 size = offsetof(struct exec_args_event, args) + e->args_size;
	if (size > sizeof(*e))
		size = sizeof(*e);
	submit(e, size, PROBE_EXEC);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
	return exec_enter(args->filename, args->argv, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
	return exec_enter(args->filename, args->argv, EXEC_VIA_EXECVEAT);
}
