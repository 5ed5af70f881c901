/* Response: the maps that hold what the agent enforces, and the checks the hooks call.
 *
 * Compiled in only with -DRESPONSE_ENFORCE (response.mode: enforce); otherwise every check
 * is `return 1` and the hooks cost what they did. Userspace (ebpfguard/respond/maps.py)
 * writes these maps; they belong to the agent's own programs, which are attached through BPF
 * links, so when the agent exits (SIGTERM or SIGKILL) the programs, the maps and everything
 * they enforce are gone with it. Nothing here is pinned.
 *
 * A sandbox is the cgroup v2 subtree rooted at one cgroup; the kernel finds it as the
 * caller's (or the socket's) ancestor at that cgroup's level, so a child cgroup made inside
 * the sandbox is covered too. `levels` says which levels hold acted-on sandboxes, so only
 * those are looked up. */
#ifndef EBPFGUARD_RESPONSE_H
#define EBPFGUARD_RESPONSE_H

/* response_state.flags: what is in force anywhere; all clear -> one array lookup per hook */
#define RESPONSE_BLOCKED_FLOWS 0x1
#define RESPONSE_SANDBOXES 0x2   /* some sandbox has denied destinations or a quarantine */
#define RESPONSE_QUARANTINE 0x4  /* some sandbox is quarantined: packets are checked too */

/* sandbox_response.flags */
#define SANDBOX_DENIES 0x1
#define SANDBOX_QUARANTINED 0x2

#define RESPONSE_MAX_LEVEL 16

struct response_state {
	u32 flags;
	u32 levels;  /* bit n: some acted-on sandbox is a cgroup at level n */
};

struct sandbox_response {
	u32 flags;
	u32 _pad;
};

/* A destination refused to one sandbox; port 0 refuses every port of the address. */
struct denied_dest {
	u64 sandbox;  /* the sandbox's cgroup id */
	u8 addr[16];  /* IPv4 in the first 4 bytes */
	u16 family;
	u16 port;     /* host byte order */
	u32 _pad;
};

/* Quarantine allowlist (one for every quarantined sandbox): longest prefix over
 * family then address; the value is the one port allowed, or 0 for any. */
struct allow_key {
	u32 prefixlen;  /* 8 (the family byte) + address prefix bits */
	u8 family;
	u8 addr[16];
};

BPF_ARRAY(response_state, struct response_state, 1);
BPF_HASH(blocked_flows, u64, u64, 65536);             /* socket cookie -> when blocked */
BPF_HASH(acted_sandboxes, u64, struct sandbox_response, 4096);
BPF_HASH(denied_dests, struct denied_dest, u64, 65536);  /* -> expiry, bpf_ktime_get_ns */
BPF_LPM_TRIE(quarantine_allow, struct allow_key, u16, 256);

#ifdef RESPONSE_ENFORCE

static __always_inline int quarantine_allows(u16 family, const u8 *addr, u16 port)
{
	struct allow_key key = {.prefixlen = 8 + 128, .family = (u8)family};

	__builtin_memcpy(key.addr, addr, 16);
	u16 *allowed = quarantine_allow.lookup(&key);
	return allowed && (*allowed == 0 || *allowed == port);
}

static __always_inline int denied(u64 sandbox, u16 family, const u8 *addr, u16 port)
{
	struct denied_dest key = {.sandbox = sandbox, .family = family, .port = port};

	__builtin_memcpy(key.addr, addr, 16);
	u64 *until = denied_dests.lookup(&key);
	if (!until) {
		key.port = 0;
		until = denied_dests.lookup(&key);
	}
	return until && (*until == 0 || bpf_ktime_get_ns() < *until);
}

/* cgroup/connect4|6: 0 refuses the connect (the caller gets EPERM). */
static __always_inline int response_allows_connect(struct bpf_sock_addr *ctx, u16 family)
{
	u32 zero = 0;
	struct response_state *st = response_state.lookup(&zero);

	if (!st || !(st->flags & RESPONSE_SANDBOXES))
		return 1;
	u8 addr[16] = {};
	u16 port = bpf_ntohs(ctx->user_port);
	if (family == 2) {
		u32 a = ctx->user_ip4;
		__builtin_memcpy(addr, &a, 4);
	} else {
		u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		__builtin_memcpy(addr, &a0, 4);
		__builtin_memcpy(addr + 4, &a1, 4);
		__builtin_memcpy(addr + 8, &a2, 4);
		__builtin_memcpy(addr + 12, &a3, 4);
	}
	u32 levels = st->levels;
	for (int level = 1; level < RESPONSE_MAX_LEVEL; level++) {
		if (!(levels & (1u << level)))
			continue;
		u64 cg = bpf_get_current_ancestor_cgroup_id(level);
		if (!cg)
			break;
		struct sandbox_response *sr = acted_sandboxes.lookup(&cg);
		if (!sr)
			continue;
		if ((sr->flags & SANDBOX_DENIES) && denied(cg, family, addr, port))
			return 0;
		if ((sr->flags & SANDBOX_QUARANTINED) && !quarantine_allows(family, addr, port))
			return 0;
	}
	return 1;
}

/* The remote address and port of a packet (wire formats, read by offset). */
static __always_inline int remote_of(struct __sk_buff *skb, int egress, u16 *family, u8 *addr, u16 *port)
{
	u8 ip[40];
	u32 l4_off;
	u8 protocol;

	if (skb->protocol == bpf_htons(0x0800)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 20))
			return -1;
		*family = 2;
		protocol = ip[9];
		l4_off = (ip[0] & 0x0f) * 4;
		__builtin_memcpy(addr, egress ? &ip[16] : &ip[12], 4);
	} else if (skb->protocol == bpf_htons(0x86DD)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 40))
			return -1;
		*family = 10;
		protocol = ip[6];
		l4_off = 40;
		__builtin_memcpy(addr, egress ? &ip[24] : &ip[8], 16);
	} else {
		return -1;
	}
	u8 ports[4] = {};
	*port = 0;
	if ((protocol == 6 || protocol == 17) && !bpf_skb_load_bytes(skb, l4_off, ports, 4))
		*port = egress ? ((u16)ports[2] << 8 | ports[3]) : ((u16)ports[0] << 8 | ports[1]);
	return 0;
}

static __always_inline int quarantined_socket(struct __sk_buff *skb, u32 levels)
{
	for (int level = 1; level < RESPONSE_MAX_LEVEL; level++) {
		if (!(levels & (1u << level)))
			continue;
		u64 cg = bpf_skb_ancestor_cgroup_id(skb, level);
		if (!cg)
			break;
		struct sandbox_response *sr = acted_sandboxes.lookup(&cg);
		if (sr && (sr->flags & SANDBOX_QUARANTINED))
			return 1;
	}
	return 0;
}

/* cgroup_skb egress/ingress: 0 drops the packet. */
static __always_inline int response_allows_packet(struct __sk_buff *skb, int egress)
{
	u32 zero = 0;
	struct response_state *st = response_state.lookup(&zero);

	if (!st || !st->flags)
		return 1;
	if (st->flags & RESPONSE_BLOCKED_FLOWS) {
		u64 cookie = bpf_get_socket_cookie(skb);
		if (blocked_flows.lookup(&cookie))
			return 0;
	}
	if ((st->flags & RESPONSE_QUARANTINE) && quarantined_socket(skb, st->levels)) {
		u16 family = 0, port = 0;
		u8 addr[16] = {};
		if (remote_of(skb, egress, &family, addr, &port))
			return 1;
		return quarantine_allows(family, addr, port);
	}
	return 1;
}

#else

static __always_inline int response_allows_connect(struct bpf_sock_addr *ctx, u16 family)
{
	return 1;
}

static __always_inline int response_allows_packet(struct __sk_buff *skb, int egress)
{
	return 1;
}

#endif
#endif
