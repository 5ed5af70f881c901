/* proc probe family: process creation and exit, for the userspace process table (ppid,
 * ancestry) and for exit events. */
#include "common.h"

#define CLONE_THREAD 0x00010000
/* Namespaces whose creation from a sandbox is an escape attempt: mount, cgroup, user, pid, net. */
#define CLONE_NEW_ESCAPE (0x00020000 | 0x02000000 | 0x10000000 | 0x20000000 | 0x40000000)

/* exit_group's status, per tgid, until the process is gone. */
BPF_HASH(exit_codes, u32, s32, 10240);

/* task_newtask rather than sched_process_fork: it carries clone_flags, so threads (which
 * the process table does not want) are dropped here instead of in userspace. */
TRACEPOINT_PROBE(task, task_newtask)
{
	struct fork_event e = {};

	if (args->clone_flags & CLONE_THREAD)
		return 0;
	fill_header(&e.hdr, EVENT_FORK);
	e.child_pid = args->pid;
	e.clone_flags = args->clone_flags;
	submit(&e, sizeof(e), PROBE_PROC);
	if (!e.hdr.lineage_cgroup_id)
		return 0;
	/* The child is born into its parent's lineage. */
	lineage_set(args->pid, e.hdr.lineage_cgroup_id);
	if (args->clone_flags & CLONE_NEW_ESCAPE) {
		struct guard_event *g = guard_start(EVENT_ESCAPE, ESCAPE_CLONE_NS);
		if (g) {
			g->arg = args->clone_flags;
			g->target_pid = args->pid;
			guard_send(g);
		}
	}
	return 0;
}

static __always_inline void remember_exit_code(long status)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	s32 code = status & 0xff;  /* exit_group(status) keeps the low 8 bits */

	exit_codes.update(&tgid, &code);
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
	remember_exit_code(args->error_code);
	return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	u64 id = bpf_get_current_pid_tgid();
	u32 tgid = id >> 32;

#ifdef HAVE_GROUP_DEAD
	if (!args->group_dead)
		return 0;
#else
	if ((u32)id != tgid)
		return 0;
#endif
	struct exit_event e = {};
	fill_header(&e.hdr, EVENT_EXIT);
	s32 *code = exit_codes.lookup(&tgid);
	if (code) {
		e.exit_code = *code;
		e.flags = EXIT_HAS_CODE;
		exit_codes.delete(&tgid);
	}
	submit(&e, sizeof(e), PROBE_PROC);
	if (e.hdr.lineage_cgroup_id && lineage.delete(&tgid) == 0)
		count_lineage(LINEAGE_DELETES);
	return 0;
}
