/* Helpers shared by every probe family: the one ring buffer, loss counters, headers. */
#ifndef EBPFGUARD_COMMON_H
#define EBPFGUARD_COMMON_H

#include "events.h"

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096
#endif

/* Submitted without a wakeup: userspace drains on a short timer, in batches. Waking the
 * consumer per event cost 37% of a loopback connect storm's throughput on a 2-vCPU host. */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

/* Records the ring buffer (or a staging map) could not take, per probe family. */
BPF_PERCPU_ARRAY(lost, u64, PROBE_FAMILIES);

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

static __always_inline void submit(void *record, u64 size, u32 family)
{
	if (events.ringbuf_output(record, size, BPF_RB_NO_WAKEUP) != 0)
		count_lost(family);
}

#endif
