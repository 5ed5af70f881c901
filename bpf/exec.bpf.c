/* exec probe family: one exec_event per execve/execveat call, emitted at syscall exit with
 * the argv captured at entry, so failed execs are reported too (retval = -errno). */
#include "common.h"

/* Records under construction, keyed by tgid: a successful exec from a non-leader thread
 * takes over the leader's pid (de_thread), so the exit sees the tgid, not the old tid. */
BPF_HASH(execs, u32, struct exec_event, 10240);
/* Staging area: an exec_event is far larger than the 512-byte BPF stack. */
BPF_PERCPU_ARRAY(exec_scratch, struct exec_event, 1);

static __always_inline void read_argv(struct exec_event *e, const char *const *argv)
{
	const char *arg = NULL;

	for (u32 i = 0; i < ARGV_MAX_ARGS; i++) {
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			return;
		/* Read one byte past ARGV_ARG_LEN: a full read then means "longer than kept"
		 * unless the byte after the kept ones is the terminator. */
		long n = bpf_probe_read_user_str(e->argv[i], ARGV_ARG_LEN + 1, arg);
		if (n < 0)
			return;
		e->argc = i + 1;
		if (n == ARGV_ARG_LEN + 1) {
			char next = 0;
			bpf_probe_read_user(&next, 1, arg + ARGV_ARG_LEN);
			if (next)
				e->flags |= EXEC_ARGV_TRUNCATED;
		}
	}
	if (!bpf_probe_read_user(&arg, sizeof(arg), &argv[ARGV_MAX_ARGS]) && arg)
		e->flags |= EXEC_ARGV_TRUNCATED;
}

static __always_inline int exec_enter(const char *filename, const char *const *argv, u32 flags)
{
	u32 zero = 0;
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct exec_event *e = exec_scratch.lookup(&zero);

	if (!e)
		return 0;
	/* The scratch slot is reused: clear what a previous, longer record left behind. */
	__builtin_memset(e, 0, sizeof(e->hdr) + 16 + FILENAME_LEN);
	e->flags = flags;
	long n = bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);
	if (n == sizeof(e->filename))
		e->flags |= EXEC_FILENAME_TRUNCATED;
	read_argv(e, argv);
	if (execs.update(&tgid, e))
		count_lost(PROBE_EXEC);
	return 0;
}

static __always_inline int exec_exit(long ret)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct exec_event *e = execs.lookup(&tgid);

	if (!e)
		return 0;
	fill_header(&e->hdr, EVENT_EXEC);
	e->retval = ret;
	submit(e, sizeof(*e), PROBE_EXEC);
	execs.delete(&tgid);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
	return exec_enter(args->filename, args->argv, 0);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
	return exec_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
	return exec_enter(args->filename, args->argv, EXEC_VIA_EXECVEAT);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
	return exec_exit(args->ret);
}
