/* flow probe family: the first bytes of each flow, both directions, from cgroup_skb hooks
 * on the cgroup2 root; plus every DNS packet (port 53).
 *
 * A cheap prefilter decides once per flow and direction, on its first data segment: only
 * bytes that could be JSON-RPC (stratum), a TLS ClientHello (SNI) or DNS go to userspace.
 * The verdict lives in the socket's own local storage (BPF_MAP_TYPE_SK_STORAGE), created at
 * a flow's first data segment: every later segment costs one pointer lookup in the socket,
 * and a flow that never carries data (a connect storm) allocates nothing. Packets carry no
 * process context, so each socket's creator is recorded at cgroup/sock_create, in a slot of
 * a table picked by the socket's cookie: one array write per socket (socket storage would
 * cost an allocation per socket, measured 380 ns here, and a free at close). A slot is
 * reused by a socket created 65536 cookies later; its flows are then sent without owner
 * (FLOW_OWNER_UNKNOWN), as an owner pushed out of the former LRU table was. */
#include "common.h"
#include "response.h"
#include "wire.h"

#define VERDICT_CAPTURE 1
#define VERDICT_IGNORE 2

struct flow_state {
	u8 verdict[2];   /* per direction: 0 undecided, VERDICT_* */
	u8 segments[2];  /* data segments sent per direction */
};

#define SOCK_OWNER_SLOTS 65536  /* a power of two */
struct sock_owner {
	u64 cookie;  /* whose header this is; 0 while being written */
	struct event_header hdr;
};

BPF_SK_STORAGE(flow_states, struct flow_state);
BPF_ARRAY(sock_owners, struct sock_owner, SOCK_OWNER_SLOTS);
BPF_PERCPU_ARRAY(flow_scratch, struct flow_event, 1);

int cgroup__sock_create(struct bpf_sock *sk)
{
	u64 cookie = bpf_get_socket_cookie(sk);
	u32 slot = cookie & (SOCK_OWNER_SLOTS - 1);
	struct sock_owner *o = sock_owners.lookup(&slot);

	if (o) {
		u64 cgroup_id = bpf_get_current_cgroup_id();
		struct net_call *c = net_call(0);  /* made by socket(2)'s entry (net.bpf.c) */
		u64 lineage = c ? lineage_remembered(&c->lineage, cgroup_id) : lineage_of_current();

		/* Cleared first, so that a reader of the slot sees no owner rather than a mix
		 * of two sockets' (the compiler barriers keep the stores in this order). */
		*(volatile u64 *)&o->cookie = 0;
		asm volatile("" ::: "memory");
		fill_header_who(&o->hdr, EVENT_FLOW, lineage, cgroup_id);  /* timed when sent */
		asm volatile("" ::: "memory");
		*(volatile u64 *)&o->cookie = cookie;
	}
	return 1;
}

/* Copies the creator of socket `cookie` into `hdr`; 0 if it is not known. */
static __always_inline int copy_owner(u64 cookie, struct event_header *hdr)
{
	u32 slot = cookie & (SOCK_OWNER_SLOTS - 1);
	struct sock_owner *o = sock_owners.lookup(&slot);

	if (!o || *(volatile u64 *)&o->cookie != cookie)
		return 0;
	asm volatile("" ::: "memory");
	__builtin_memcpy(hdr, &o->hdr, sizeof(*hdr));
	asm volatile("" ::: "memory");
	return *(volatile u64 *)&o->cookie == cookie;
}

static __always_inline void send_segment(struct __sk_buff *skb, u8 direction,
					 struct l4_info *l4, u8 seq)
{
	u32 zero = 0;
	struct flow_event *e = flow_scratch.lookup(&zero);

	if (!e)
		return;
	u64 cookie = bpf_get_socket_cookie(skb);
	if (copy_owner(cookie, &e->hdr)) {
		e->flags = 0;
	} else {
		__builtin_memset(&e->hdr, 0, sizeof(e->hdr));
		e->hdr.cgroup_id = bpf_skb_cgroup_id(skb);
		e->flags = FLOW_OWNER_UNKNOWN;
	}
	if (!bulk_admit(budget_of(e->hdr.lineage_cgroup_id, e->hdr.cgroup_id), EVENT_FLOW))
		return;
	e->hdr.kind = EVENT_FLOW;
	e->hdr.ktime_ns = bpf_ktime_get_boot_ns();
	e->sock_cookie = cookie;
	e->payload_len = l4->payload_len;
	e->family = l4->family;
	e->dport = l4->remote_port;
	e->sport = l4->local_port;
	e->direction = direction;
	e->protocol = l4->protocol;
	e->seq = seq;
	__builtin_memcpy(e->daddr, l4->remote_addr, 16);

	/* In [1, FLOW_PAYLOAD_MAX] by arithmetic the verifier can follow (payload_len > 0 here);
	 * a plain clamp gets compiled into a check on a copy of the register. */
	u32 n = l4->payload_len >= FLOW_PAYLOAD_MAX ? FLOW_PAYLOAD_MAX
		: ((l4->payload_len - 1) & (FLOW_PAYLOAD_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, l4->payload_off, e->payload, n))
		return;
	e->captured = n;
	submit(e, offsetof(struct flow_event, payload) + n, PROBE_FLOW);
}

static __always_inline int on_packet(struct __sk_buff *skb, u8 direction)
{
	if (tcp_without_payload(skb))
		return 1;
	/* cgroup_skb programs run only for full sockets; the check is for the verifier. */
	struct bpf_sock *sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	struct flow_state *st = flow_states.sk_storage_get(sk, 0, 0);

	if (st && (st->verdict[direction] == VERDICT_IGNORE || st->segments[direction] >= FLOW_SEGMENTS_MAX))
		return 1;

	struct l4_info l4 = {};
	if (parse_packet(skb, direction, &l4) || l4.payload_len == 0)
		return 1;

	/* DNS over UDP: every packet is a question or an answer of its own. */
	if (l4.protocol == IPPROTO_UDP) {
		if (l4.remote_port == DNS_PORT || l4.local_port == DNS_PORT)
			send_segment(skb, direction, &l4, 0);
		return 1;
	}

	if (!st) {
		st = flow_states.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!st)
			return 1;
	}
	if (!st->verdict[direction])
		st->verdict[direction] = worth_capturing(skb, &l4) ? VERDICT_CAPTURE : VERDICT_IGNORE;
	if (st->verdict[direction] == VERDICT_CAPTURE) {
		u8 seq = st->segments[direction]++;
		send_segment(skb, direction, &l4, seq);
	}
	return 1;
}

/* Pass (1) unless a response in force drops the packet (bpf/response.h); a dropped packet
 * is not captured. */
int cgroup_skb__egress(struct __sk_buff *skb)
{
	if (!response_allows_packet(skb, 1))
		return 0;
	return on_packet(skb, FLOW_EGRESS);
}

int cgroup_skb__ingress(struct __sk_buff *skb)
{
	if (!response_allows_packet(skb, 0))
		return 0;
	return on_packet(skb, FLOW_INGRESS);
}
