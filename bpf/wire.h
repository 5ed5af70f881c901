/* Wire formats the flow probes read from packets: IPv4/IPv6, TCP/UDP headers (by byte
 * offsets: these are protocol formats, not kernel structs) and the first bytes of a payload. */
#ifndef EBPFGUARD_WIRE_H
#define EBPFGUARD_WIRE_H

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define DNS_PORT 53

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

/* A TCP segment without payload (the handshake, ACKs, FIN): most packets of short flows, told
 * apart by direct reads of the linear header (cgroup_skb may read packet data since 5.2)
 * instead of parse_packet's copies. 0 when unsure (headers not linear): parse_packet decides. */
static __always_inline int tcp_without_payload(struct __sk_buff *skb)
{
	u8 *data = (u8 *)(long)skb->data, *end = (u8 *)(long)skb->data_end;
	u32 l4_off, total;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (data + 20 > end || data[9] != IPPROTO_TCP)
			return 0;
		l4_off = (data[0] & 0x0f) * 4;
		total = ((u32)data[2] << 8) | data[3];
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (data + 40 > end || data[6] != IPPROTO_TCP)
			return 0;
		l4_off = 40;
		total = 40 + (((u32)data[4] << 8) | data[5]);
	} else {
		return 0;
	}
	u8 *th = data + (l4_off & 0x3c);
	if (th + 13 > end)
		return 0;
	return total <= l4_off + (th[12] >> 4) * 4;
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

#endif
