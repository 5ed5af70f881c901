/* Per-sandbox rate limits: of the bulk record kinds (socket, connect, flow), and of the bytes
 * of argv read again from new images' stacks (exec_exit.bpf.c). Buckets are keyed by the
 * record's budget_of (common.h): a sandbox's lineage cgroup, so child cgroups it makes (each
 * would otherwise get a bucket of its own) share its one budget.
 *
 * A sandbox looping on connect() to a closed port makes hundreds of thousands of records a
 * second; sent whole they would fill the ring and cost every other sandbox its events. Each
 * (cgroup, kind) gets a token bucket of BULK_RATE records a second with bursts of BULK_BURST
 * (both from the config, compiled in; BULK_RATE 0 turns the limit off). What the bucket
 * refuses is not gone: it is counted per (cgroup, kind) in held_back, which userspace reads
 * every second (without clearing it: kernel/load.py, CounterGrowth) and reports as a
 * `summary` event naming the sandbox. */
#include "common.h"

#ifndef BULK_RATE
#define BULK_RATE 1000
#endif
#ifndef BULK_BURST
#define BULK_BURST 2000
#endif

/* The bucket as one number (GCRA): the time at which it is empty again. A record is taken
 * while that time is less than BULK_BURST intervals ahead of now, and pushes it one interval
 * further. Updates from two CPUs at once may both pass: the limit is approximate by a record
 * or two, never by a flood. */
BPF_TABLE("lru_hash", struct cgroup_count_key, u64, bulk_buckets, 10240);
BPF_TABLE("lru_hash", struct cgroup_count_key, u64, held_back, 10240);

static __always_inline void count_held_back(struct cgroup_count_key *key)
{
	u64 *n = held_back.lookup(key);

	if (!n) {
		/* NOEXIST: of two CPUs counting a key's first refusal, one inserts and the other
		 * adds to it (an update would overwrite the other's count). */
		u64 first = 1;

		if (held_back.insert(key, &first) == 0)
			return;
		n = held_back.lookup(key);
		if (!n)
			return;
	}
	__sync_fetch_and_add(n, 1);
}

/* The buckets' clock: jiffies (JIFFY_NS, from the kernel's HZ: load.py), a load of a kernel
 * variable, where reading the clock source costs 26 ns a record on a VM (kvm-clock). A
 * bucket then fills by a tick's worth (1 to 10 ms) at once: rate and burst stay as set. */
static __always_inline u64 bucket_clock(void)
{
#ifdef JIFFY_NS
	return bpf_jiffies64() * JIFFY_NS;
#else
	return bpf_ktime_get_boot_ns();
#endif
}

/* Takes `cost_ns` from the bucket of `key`, whose depth is `depth_ns`: 1 if it had that
 * much, else 0 and the refusal is counted under `key`. */
static __always_inline int bucket_take(struct cgroup_count_key *key, u64 cost_ns, u64 depth_ns)
{
	u64 now = bucket_clock();
	u64 *empty_at = bulk_buckets.lookup(key);

	if (!empty_at) {
		u64 next = now + cost_ns;
		bulk_buckets.update(key, &next);
		return 1;
	}
	u64 from = *empty_at > now ? *empty_at : now;
	if (from - now + cost_ns > depth_ns) {
		count_held_back(key);
		return 0;
	}
	*empty_at = from + cost_ns;
	return 1;
}

/* 1 when a record of `kind` from `cgroup_id` may be sent; 0 (and counted) when held back. */
static __always_inline int bulk_admit(u64 cgroup_id, u32 kind)
{
#if BULK_RATE > 0
	const u64 interval = 1000000000ULL / BULK_RATE;
	struct cgroup_count_key key = { .cgroup_id = cgroup_id, .kind = kind };

	return bucket_take(&key, interval, BULK_BURST * interval);
#else
	return 1;
#endif
}

/* Connects to link-local addresses (the cloud metadata service: 169.254.169.254, fe80::/10,
 * fd00:ec2::254) are never held back: a flood must not hide the one connect that matters
 * most (egress.internal, critical). Flooding them instead sends every one. */
static __always_inline int connect_admit(u16 family, const u8 *daddr, u64 budget)
{
	if (family == 2 && daddr[0] == 169 && daddr[1] == 254)
		return 1;
	if (family == 10 && ((daddr[0] == 0xfe && (daddr[1] & 0xc0) == 0x80) ||
			     (daddr[0] == 0xfd && daddr[1] == 0 && daddr[2] == 0x0e && daddr[3] == 0xc2) ||
			     (daddr[10] == 0xff && daddr[11] == 0xff && daddr[12] == 169 && daddr[13] == 254)))
		return 1;
	return bulk_admit(budget, EVENT_CONNECT);
}

#ifndef ARGV_STACK_RATE
#define ARGV_STACK_RATE 128   /* ARGV_STACK_CHUNK pieces a second: 1 MiB/s */
#endif

/* Reading argv from the stack sends up to ARGV_STACK_MAX per exec into the exec ring; a
 * sandbox exec'ing huge command lines in a loop must not fill it for everyone. Each cgroup may
 * have ARGV_STACK_RATE pieces a second read (bursts of two seconds' worth, a quarter of the
 * default exec ring); past that the exec is still sent, with what entry read, flagged
 * EXEC_STACK_HELD_BACK and counted. */
static __always_inline int stack_argv_admit(u64 cgroup_id, u32 pieces)
{
#if ARGV_STACK_RATE > 0
	const u64 interval = 1000000000ULL / ARGV_STACK_RATE;
	struct cgroup_count_key key = { .cgroup_id = cgroup_id, .kind = EVENT_EXEC_ARGV };

	return bucket_take(&key, pieces * interval, 2 * ARGV_STACK_RATE * interval);
#else
	return 1;
#endif
}
