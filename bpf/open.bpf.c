/* open probe family: opens of GPU and accelerator device nodes (/dev/nvidiaN, /dev/dri/cardN,
 * /dev/kfd, /dev/accel/accelN), so a sandbox touching a GPU is seen even where no NVIDIA library
 * is installed; and a miner's CPU tuning: any open of /dev/cpu/N/msr (XMRig's MSR mod), and
 * opens for writing under /sys/module/msr/ (allow_writes), /proc/sys/vm/nr_* and the huge
 * page pools in sysfs (reads, as a training job checking its huge pages does, stay here).
 * Every other open costs a 24-byte read and a few compares at entry; nothing goes to
 * userspace for it. Paths are matched as passed: an open relative to a directory fd is not
 * seen (NVML, CUDA, XMRig and sysctl open absolute paths). */
#include "common.h"

struct open_call {
	u32 flags;
	char filename[OPEN_PATH_LEN];
};

BPF_TABLE("lru_hash", u32, struct open_call, open_calls, 4096);

static __always_inline int has_prefix(const char *s, const char *prefix, int len)
{
	for (int i = 0; i < len; i++)
		if (s[i] != prefix[i])
			return 0;
	return 1;
}

static __always_inline int is_gpu_device(const char *path)
{
	char nvidia[] = "/dev/nvidia", dri[] = "/dev/dri/", kfd[] = "/dev/kfd", accel[] = "/dev/accel";

	return has_prefix(path, nvidia, sizeof(nvidia) - 1) || has_prefix(path, dri, sizeof(dri) - 1) ||
	       has_prefix(path, kfd, sizeof(kfd) - 1) || has_prefix(path, accel, sizeof(accel) - 1);
}

#define O_ACCMODE 3

static __always_inline int is_cpu_tuning(const char *path, u32 flags)
{
	char cpu[] = "/dev/cpu/", msr[] = "/sys/module/msr/", vm[] = "/proc/sys/vm/nr_",
	     mm[] = "/sys/kernel/mm/hugepages/", node[] = "/sys/devices/system/node/";

	if (has_prefix(path, cpu, sizeof(cpu) - 1))
		return 1;
	if (!(flags & O_ACCMODE))  /* O_RDONLY: reading settings is not tuning them */
		return 0;
	return has_prefix(path, msr, sizeof(msr) - 1) || has_prefix(path, vm, sizeof(vm) - 1) ||
	       has_prefix(path, mm, sizeof(mm) - 1) || has_prefix(path, node, sizeof(node) - 1);
}

/* --- Escape paths (sandbox.escape): a sandboxed process opening for writing a file whose
 * name is a known way out of a container: a cgroup v1 release_agent or notify_on_release,
 * /proc/sys/kernel/core_pattern, /proc/sysrq-trigger. Matched by the last path component, so
 * a relative path (cd /proc/sys/kernel; > core_pattern) is caught too. Host processes pay
 * one lineage lookup, and only for opens for writing. */
#define ESCAPE_PATH_MASK (GUARD_PATH_LEN - 1)

static __always_inline int ends_with_name(const char *p, long len, const char *name, int n)
{
	if (len < n || (len > n && p[(len - n - 1) & ESCAPE_PATH_MASK] != '/'))
		return 0;
	for (int k = 0; k < n; k++)
		if (p[(len - n + k) & ESCAPE_PATH_MASK] != name[k])
			return 0;
	return 1;
}

static __always_inline void escape_path_open(const char *filename, u32 flags)
{
	char release[] = "release_agent", notify[] = "notify_on_release";
	char core[] = "core_pattern", sysrq[] = "sysrq-trigger";

	if (!(flags & O_ACCMODE) || !lineage_of_current())
		return;
	struct guard_event *e = guard_start(EVENT_ESCAPE, ESCAPE_PATH_WRITE);
	if (!e)
		return;
	long len = bpf_probe_read_user_str(e->path, sizeof(e->path), filename) - 1;
	if (len <= 0)
		return;
	if (ends_with_name(e->path, len, release, sizeof(release) - 1) ||
	    ends_with_name(e->path, len, notify, sizeof(notify) - 1) ||
	    ends_with_name(e->path, len, core, sizeof(core) - 1) ||
	    ends_with_name(e->path, len, sysrq, sizeof(sysrq) - 1)) {
		e->arg = flags;
		guard_send(e);
	}
}
/* --- end of escape paths */

static __always_inline int open_enter(const char *filename, u32 flags)
{
	char head[32] = {};

	escape_path_open(filename, flags);

	if (bpf_probe_read_user_str(head, sizeof(head), filename) < 9 ||
	    !(is_gpu_device(head) || is_cpu_tuning(head, flags)))
		return 0;
	u32 tid = bpf_get_current_pid_tgid();
	struct open_call call = { .flags = flags };
	bpf_probe_read_user_str(call.filename, sizeof(call.filename), filename);
	open_calls.update(&tid, &call);
	return 0;
}

static __always_inline int open_exit(long ret)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct open_call *call = open_calls.lookup(&tid);

	if (!call)
		return 0;
	struct open_event e = {};
	fill_header(&e.hdr, EVENT_OPEN);
	e.retval = ret;
	e.flags = call->flags;
	__builtin_memcpy(e.filename, call->filename, sizeof(e.filename));
	open_calls.delete(&tid);
	submit(&e, sizeof(e), PROBE_OPEN);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat)
{
	return open_enter(args->filename, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
	return open_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_openat2)
{
	u64 flags = 0;

	bpf_probe_read_user(&flags, sizeof(flags), args->how);  /* struct open_how starts with flags */
	return open_enter(args->filename, flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat2)
{
	return open_exit(args->ret);
}

#ifdef HAVE_SYS_OPEN
TRACEPOINT_PROBE(syscalls, sys_enter_open)
{
	return open_enter(args->filename, args->flags);
}

TRACEPOINT_PROBE(syscalls, sys_exit_open)
{
	return open_exit(args->ret);
}
#endif
