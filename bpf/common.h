/* Helpers shared by every probe family: the ring buffers, loss counters, headers. */
#ifndef EBPFGUARD_COMMON_H
#define EBPFGUARD_COMMON_H

#include "events.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096
#endif
#ifndef EXEC_RINGBUF_PAGES
#define EXEC_RINGBUF_PAGES 2048
#endif

/* Two rings, so that network volume cannot crowd out process events: exec and proc records
 * go to exec_events, the bulk families (net, flow, open) to events. A sandbox flooding
 * connects fills only the bulk ring (and is rate-limited before that, ratelimit.bpf.c).
 * Submitted without a wakeup: userspace drains on a short timer, in batches. Waking the
 * consumer per event cost 37% of a loopback connect storm's throughput on a 2-vCPU host. */
BPF_RINGBUF_OUTPUT(exec_events, EXEC_RINGBUF_PAGES);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

/* Records the ring buffer (or a staging map) could not take, per probe family. */
BPF_PERCPU_ARRAY(lost, u64, PROBE_FAMILIES);
/* The same losses by the cgroup whose record it was, so userspace can name the sandbox whose
 * volume is costing events. LRU: a host churning through cgroups cannot pin entries. */
BPF_TABLE("lru_hash", struct cgroup_count_key, u64, lost_by_cgroup, 4096);

static __always_inline void count_lost(u32 family)
{
	u64 *n = lost.lookup(&family);
	if (n)
		(*n)++;
}

static __always_inline void fill_header(struct event_header *hdr, u32 kind)
{
	u64 id = bpf_get_current_pid_tgid();

	hdr->ktime_ns = bpf_ktime_get_boot_ns();
	hdr->cgroup_id = bpf_get_current_cgroup_id();
	hdr->kind = kind;
	hdr->pid = id >> 32;
	hdr->tid = (u32)id;
	hdr->uid = (u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(&hdr->comm, sizeof(hdr->comm));
}

/* Every record starts with its event_header: a lost one is charged to its cgroup. */
static __always_inline void submit(void *record, u64 size, u32 family)
{
	long err;

	if (family == PROBE_EXEC || family == PROBE_PROC)
		err = exec_events.ringbuf_output(record, size, BPF_RB_NO_WAKEUP);
	else
		err = events.ringbuf_output(record, size, BPF_RB_NO_WAKEUP);
	if (err == 0)
		return;
	count_lost(family);
	struct cgroup_count_key key = {
		.cgroup_id = ((struct event_header *)record)->cgroup_id, .kind = family,
	};
	u64 *n = lost_by_cgroup.lookup(&key);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else {
		u64 first = 1;
		lost_by_cgroup.update(&key, &first);
	}
}

#endif
