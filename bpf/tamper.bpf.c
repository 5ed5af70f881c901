/* tamper probe family: a sandboxed process acting on the agent, on the kernel's BPF and
 * tracing machinery, or on processes outside its sandbox.
 *
 * bpf(), perf_event_open() and module loading from a sandbox are reported whatever their
 * arguments; ptrace attach and process_vm_writev when the target is not of the caller's
 * lineage; signals and pidfd_open when they name the agent (AGENT_PID, or -1: everyone).
 * Pids are compared only for callers in the host's pid namespace (HOST_PIDNS_*): a caller
 * in a pid namespace of its own names pids of that namespace, and cannot reach the agent.
 * Every hook asks the lineage map first: host processes send nothing. */
#include "common.h"

#ifndef AGENT_PID
#define AGENT_PID 0
#endif
#ifndef HOST_PIDNS_DEV
#define HOST_PIDNS_DEV 0
#define HOST_PIDNS_INO 0
#endif

#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

static __always_inline int in_host_pidns(void)
{
	struct bpf_pidns_info ns = {};

	return bpf_get_ns_current_pid_tgid(HOST_PIDNS_DEV, HOST_PIDNS_INO, &ns, sizeof(ns)) == 0;
}

static __always_inline int tamper(u32 what, s64 aux, s32 target_pid)
{
	if (guard_repeat(what, ((u64)(u32)target_pid << 32) | (u32)aux))
		return 0;
	struct guard_event *e = guard_start(EVENT_TAMPER, what);

	if (!e)
		return 0;
	e->aux = aux;
	e->target_pid = target_pid;
	if (target_pid > 0) {
		u32 target = target_pid;
		u64 *anchor = lineage.lookup(&target);
		e->target_lineage_cgroup_id = anchor ? *anchor : 0;
	}
	guard_send(e);
	return 0;
}

/* A process outside the caller's lineage (host pid namespace only, see above). */
static __always_inline int outside_lineage(u64 own, s64 pid)
{
	if (pid <= 0 || !in_host_pidns())
		return 0;
	u32 target = pid;
	u64 *anchor = lineage.lookup(&target);
	return !anchor || *anchor != own;
}

static __always_inline int names_agent(s64 pid)
{
	return (pid == AGENT_PID || pid == -1) && in_host_pidns();
}

TRACEPOINT_PROBE(syscalls, sys_enter_bpf)
{
	if (!lineage_of_current())
		return 0;
	return tamper(TAMPER_BPF, args->cmd, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_perf_event_open)
{
	if (!lineage_of_current())
		return 0;
	return tamper(TAMPER_PERF_EVENT_OPEN, args->cpu, args->pid);
}

TRACEPOINT_PROBE(syscalls, sys_enter_ptrace)
{
	if (args->request != PTRACE_ATTACH && args->request != PTRACE_SEIZE)
		return 0;
	u64 own = lineage_of_current();
	if (!own || !outside_lineage(own, args->pid))
		return 0;
	return tamper(TAMPER_PTRACE, args->request, args->pid);
}

TRACEPOINT_PROBE(syscalls, sys_enter_process_vm_writev)
{
	u64 own = lineage_of_current();
	if (!own || !outside_lineage(own, args->pid))
		return 0;
	return tamper(TAMPER_PROCESS_VM_WRITEV, 0, args->pid);
}

static __always_inline int signal_sent(s64 pid, int sig)
{
	if (!lineage_of_current() || !names_agent(pid))
		return 0;
	return tamper(TAMPER_SIGNAL, sig, pid);
}

TRACEPOINT_PROBE(syscalls, sys_enter_kill)
{
	return signal_sent((s32)args->pid, args->sig);
}

TRACEPOINT_PROBE(syscalls, sys_enter_tkill)
{
	return signal_sent((s32)args->pid, args->sig);
}

TRACEPOINT_PROBE(syscalls, sys_enter_tgkill)
{
	return signal_sent((s32)args->tgid, args->sig);
}

TRACEPOINT_PROBE(syscalls, sys_enter_pidfd_open)
{
	if (!lineage_of_current() || (s32)args->pid != AGENT_PID || !in_host_pidns())
		return 0;
	return tamper(TAMPER_PIDFD_OPEN, 0, args->pid);
}

#ifdef HAVE_MODULE_SYSCALLS
TRACEPOINT_PROBE(syscalls, sys_enter_init_module)
{
	return lineage_of_current() ? tamper(TAMPER_MODULE, 0, 0) : 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_finit_module)
{
	return lineage_of_current() ? tamper(TAMPER_MODULE, 1, 0) : 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_delete_module)
{
	return lineage_of_current() ? tamper(TAMPER_MODULE, 2, 0) : 0;
}
#endif
