/* escape probe family: a sandboxed process reaching for a way out of its sandbox.
 *
 * Cgroup moves (also where lineage entries of processes moved into a sandbox are made),
 * setns/unshare, and mounts. Every hook first asks the lineage map whether the caller is
 * sandboxed: a host process pays one hash lookup (two, plus an ancestor walk, the first
 * time) and sends nothing. Writes to escape paths (release_agent, core_pattern...) are
 * caught by the open probe's escape block (open.bpf.c). Clone with new namespaces is
 * caught at task_newtask (proc.bpf.c). */
#include "common.h"

#define CGROUP2_HIERARCHY 0  /* cgroup v2's hierarchy id; v1 hierarchies are ignored */
#define PATH_MASK (GUARD_PATH_LEN - 1)
/* Namespaces whose entry from a sandbox is an escape attempt: mount, cgroup, user, pid, net
 * (0: whatever namespace the fd names). */
#define NS_ESCAPE (0x00020000 | 0x02000000 | 0x10000000 | 0x20000000 | 0x40000000)

/* Some component of a cgroup path (from the tracepoint, NUL-terminated) names a sandbox. */
static __always_inline int path_names_sandbox(const char *b)
{
	for (int i = 0; i < GUARD_PATH_LEN - 1; i++) {
		if (b[i] == 0)
			return 0;
		if (b[i] == '/' && SANDBOX_NAME_AT(b, i + 1))
			return 1;
	}
	return 0;
}

/* After the move: the task is already in dst, so the source is known only from lineage. */
TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
	if (args->dst_root != CGROUP2_HIERARCHY)
		return 0;
	u32 moved = args->pid;
	u64 dst = args->dst_id;
	u32 self = bpf_get_current_pid_tgid() >> 32;
	u64 *moved_lineage = lineage.lookup(&moved);
	u64 *mover_lineage = lineage.lookup(&self);
	u64 moved_anchor = moved_lineage ? *moved_lineage : 0;

	if (!moved_anchor) {
		/* A process moved into a sandbox joins its lineage from now on. */
		int known = sandbox_cgroups.lookup(&dst) != NULL;
		if (!known) {
			u32 zero = 0;
			struct guard_event *scratch = guard_scratch.lookup(&zero);
			if (!scratch)
				return 0;
			TP_DATA_LOC_READ_STR(scratch->path, dst_path, GUARD_PATH_LEN);
			if (path_names_sandbox(scratch->path)) {
				u8 yes = 1;
				sandbox_cgroups.update(&dst, &yes);
				lineage_epoch_bump();
				known = 1;
			}
		}
		if (known)
			lineage_set(moved, dst);
	}
	if (!mover_lineage)
		return 0;  /* the host moving a process keeps (or gives) it its lineage: no attempt */
	/* A sandboxed mover: userspace compares the destination with its sandbox by name. */
	struct guard_event *e = guard_start(EVENT_ESCAPE, ESCAPE_CGROUP_MOVE);
	if (!e)
		return 0;
	e->target_pid = moved;
	e->target_cgroup_id = dst;
	e->target_lineage_cgroup_id = moved_anchor;
	TP_DATA_LOC_READ_STR(e->path, dst_path, GUARD_PATH_LEN);
	guard_send(e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_setns)
{
	if (!lineage_of_current())
		return 0;
	if (args->flags && !(args->flags & NS_ESCAPE))
		return 0;
	if (guard_repeat(ESCAPE_SETNS, args->flags))
		return 0;
	struct guard_event *e = guard_start(EVENT_ESCAPE, ESCAPE_SETNS);
	if (!e)
		return 0;
	e->arg = (u32)args->flags;
	e->aux = args->fd;
	guard_send(e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_unshare)
{
	if (!(args->unshare_flags & NS_ESCAPE) || !lineage_of_current())
		return 0;
	if (guard_repeat(ESCAPE_UNSHARE, args->unshare_flags))
		return 0;
	struct guard_event *e = guard_start(EVENT_ESCAPE, ESCAPE_UNSHARE);
	if (!e)
		return 0;
	e->arg = args->unshare_flags;
	guard_send(e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_mount)
{
	if (!lineage_of_current())
		return 0;
	struct guard_event *e = guard_start(EVENT_ESCAPE, ESCAPE_MOUNT);
	if (!e)
		return 0;
	e->arg = args->flags;
	bpf_probe_read_user_str(e->path, sizeof(e->path), args->dir_name);
	bpf_probe_read_user_str(e->detail, sizeof(e->detail), args->type);
	guard_send(e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_fsmount)
{
	if (!lineage_of_current())
		return 0;
	if (guard_repeat(ESCAPE_FSMOUNT, args->flags))
		return 0;
	struct guard_event *e = guard_start(EVENT_ESCAPE, ESCAPE_FSMOUNT);
	if (!e)
		return 0;
	e->arg = args->flags;
	guard_send(e);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_move_mount)
{
	if (!lineage_of_current())
		return 0;
	struct guard_event *e = guard_start(EVENT_ESCAPE, ESCAPE_MOVE_MOUNT);
	if (!e)
		return 0;
	e->arg = args->flags;
	bpf_probe_read_user_str(e->path, sizeof(e->path), args->to_pathname);
	guard_send(e);
	return 0;
}
