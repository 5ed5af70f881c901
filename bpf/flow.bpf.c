/* flow probe family: the first bytes of each flow, both directions, from cgroup_skb hooks
 * on the cgroup2 root; plus every DNS packet (port 53).
 *
 * A cheap prefilter decides once per flow and direction, on its first data segment: only
 * bytes that could be JSON-RPC (stratum), a TLS ClientHello (SNI) or DNS go to userspace.
 * Every other segment of every other flow costs one map lookup. Packets carry no process
 * context, so each socket's creator is recorded at cgroup/sock_create and looked up by its
 * socket cookie. */
#include "common.h"
#include "response.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define DNS_PORT 53

#define VERDICT_CAPTURE 1
#define VERDICT_IGNORE 2

struct flow_state {
	u8 verdict[2];   /* per direction: 0 undecided, VERDICT_* */
	u8 segments[2];  /* data segments sent per direction */
};

BPF_TABLE("lru_hash", u64, struct event_header, sock_owners, 65536);
BPF_TABLE("lru_hash", u64, struct flow_state, flow_states, 65536);
BPF_PERCPU_ARRAY(flow_scratch, struct flow_event, 1);

int cgroup__sock_create(struct bpf_sock *sk)
{
	u64 cookie = bpf_get_socket_cookie(sk);
	struct event_header owner = {};

	fill_header(&owner, EVENT_FLOW);
	sock_owners.update(&cookie, &owner);
	return 1;
}

/* Wire headers, parsed by byte offsets: these are protocol formats, not kernel structs. */
struct l4_info {
	u16 family;
	u8 protocol;
	u16 remote_port;
	u16 local_port;
	u32 payload_off;
	u32 payload_len;
	u8 remote_addr[16];
};

static __always_inline int parse_packet(struct __sk_buff *skb, u8 direction, struct l4_info *l4)
{
	u32 l4_off, total;
	u8 ip[40];

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 20))
			return -1;
		l4->family = 2;
		l4->protocol = ip[9];
		l4_off = (ip[0] & 0x0f) * 4;
		total = ((u32)ip[2] << 8) | ip[3];
		/* remote: destination when sending, source when receiving */
		__builtin_memcpy(l4->remote_addr, direction == FLOW_EGRESS ? &ip[16] : &ip[12], 4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 40))
			return -1;
		l4->family = 10;
		l4->protocol = ip[6];  /* extension headers are not followed */
		l4_off = 40;
		total = 40 + (((u32)ip[4] << 8) | ip[5]);
		__builtin_memcpy(l4->remote_addr, direction == FLOW_EGRESS ? &ip[24] : &ip[8], 16);
	} else {
		return -1;
	}

	u8 l4h[14];
	if (l4->protocol == IPPROTO_TCP) {
		if (bpf_skb_load_bytes(skb, l4_off, l4h, 14))
			return -1;
		l4->payload_off = l4_off + (l4h[12] >> 4) * 4;
	} else if (l4->protocol == IPPROTO_UDP) {
		if (bpf_skb_load_bytes(skb, l4_off, l4h, 8))
			return -1;
		l4->payload_off = l4_off + 8;
	} else {
		return -1;
	}
	u16 src = ((u16)l4h[0] << 8) | l4h[1], dst = ((u16)l4h[2] << 8) | l4h[3];
	l4->remote_port = direction == FLOW_EGRESS ? dst : src;
	l4->local_port = direction == FLOW_EGRESS ? src : dst;
	l4->payload_len = total > l4->payload_off ? total - l4->payload_off : 0;
	return 0;
}

/* JSON-RPC (after a little whitespace), a TLS ClientHello, or DNS over TCP. */
static __always_inline int worth_capturing(struct __sk_buff *skb, struct l4_info *l4)
{
	u8 head[8] = {};

	if (l4->remote_port == DNS_PORT || l4->local_port == DNS_PORT)
		return 1;
	if (bpf_skb_load_bytes(skb, l4->payload_off, head, l4->payload_len < 8 ? 1 : 8))
		return 0;
	if (l4->payload_len >= 6 && head[0] == 0x16 && head[1] == 0x03 && head[5] == 0x01)
		return 1;
	for (int i = 0; i < 5; i++) {
		u8 c = head[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		return c == '{' || c == '[';
	}
	return 0;
}

static __always_inline void send_segment(struct __sk_buff *skb, u64 cookie, u8 direction,
					 struct l4_info *l4, u8 seq)
{
	u32 zero = 0;
	struct flow_event *e = flow_scratch.lookup(&zero);

	if (!e)
		return;
	struct event_header *owner = sock_owners.lookup(&cookie);
	if (owner) {
		__builtin_memcpy(&e->hdr, owner, sizeof(e->hdr));
		e->flags = 0;
	} else {
		__builtin_memset(&e->hdr, 0, sizeof(e->hdr));
		e->hdr.cgroup_id = bpf_skb_cgroup_id(skb);
		e->flags = FLOW_OWNER_UNKNOWN;
	}
	if (!bulk_admit(e->hdr.cgroup_id, EVENT_FLOW))
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
	u64 cookie = bpf_get_socket_cookie(skb);
	struct flow_state *st = flow_states.lookup(&cookie);

	if (st && (st->verdict[direction] == VERDICT_IGNORE || st->segments[direction] >= FLOW_SEGMENTS_MAX))
		return 1;

	struct l4_info l4 = {};
	if (parse_packet(skb, direction, &l4) || l4.payload_len == 0)
		return 1;

	/* DNS over UDP: every packet is a question or an answer of its own. */
	if (l4.protocol == IPPROTO_UDP) {
		if (l4.remote_port == DNS_PORT || l4.local_port == DNS_PORT)
			send_segment(skb, cookie, direction, &l4, 0);
		return 1;
	}

	struct flow_state fresh = {};
	if (!st) {
		flow_states.update(&cookie, &fresh);
		st = flow_states.lookup(&cookie);
		if (!st)
			return 1;
	}
	if (!st->verdict[direction])
		st->verdict[direction] = worth_capturing(skb, &l4) ? VERDICT_CAPTURE : VERDICT_IGNORE;
	if (st->verdict[direction] == VERDICT_CAPTURE) {
		u8 seq = st->segments[direction]++;
		send_segment(skb, cookie, direction, &l4, seq);
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
