/* net probe family: socket() and connect() with their results.
 *
 * The destination comes from the cgroup/connect4|6 hooks, which see the address the kernel
 * will really use (read after the kernel copied it from userspace). A syscall tracepoint
 * reading the user's sockaddr can be fooled by a thread that rewrites it in between (a
 * time-of-check/time-of-use race). The result comes from the connect syscall's exit; a
 * connect made outside connect(2) (io_uring) is sent from the hook, without a result. */
#include "common.h"
#include "response.h"

#define AF_INET 2
#define AF_INET6 10

struct socket_args {
	s32 family;
	s32 type;
	s32 protocol;
};

/* LRU: a call whose exit never comes (a connect issued through io_uring, say) cannot pin an entry. */
BPF_TABLE("lru_hash", u32, struct socket_args, socket_calls, 10240);
BPF_TABLE("lru_hash", u32, struct connect_event, connect_calls, 10240);
/* Threads inside connect(2). The cgroup hook also runs for connects that no syscall made
 * (an io_uring IORING_OP_CONNECT): those have no exit to wait for and are sent at once. */
BPF_TABLE("lru_hash", u32, u8, in_connect, 10240);

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct socket_args a = {
		.family = args->family, .type = args->type, .protocol = args->protocol,
	};

	socket_calls.update(&tid, &a);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct socket_args *a = socket_calls.lookup(&tid);
	struct socket_event e = {};

	if (!a)
		return 0;
	if (!bulk_admit(bpf_get_current_cgroup_id(), EVENT_SOCKET)) {
		socket_calls.delete(&tid);
		return 0;
	}
	fill_header(&e.hdr, EVENT_SOCKET);
	e.family = a->family;
	e.type = a->type;
	e.protocol = a->protocol;
	e.retval = args->ret;
	socket_calls.delete(&tid);
	submit(&e, sizeof(e), PROBE_NET);
	return 0;
}

static __always_inline void remember_connect(struct bpf_sock_addr *ctx, u16 family)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct connect_event e = {};

	e.family = family;
	e.sock_cookie = bpf_get_socket_cookie(ctx);
	e.netns_cookie = bpf_get_netns_cookie(ctx);
	e.dport = bpf_ntohs(ctx->user_port);
	if (family == AF_INET) {
		__builtin_memcpy(e.daddr, &ctx->user_ip4, 4);
	} else {
		u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		__builtin_memcpy(e.daddr, &a0, 4);
		__builtin_memcpy(e.daddr + 4, &a1, 4);
		__builtin_memcpy(e.daddr + 8, &a2, 4);
		__builtin_memcpy(e.daddr + 12, &a3, 4);
	}
	if (!in_connect.lookup(&tid)) {
		if (!connect_admit(family, e.daddr))
			return;
		fill_header(&e.hdr, EVENT_CONNECT);
		e.flags = CONNECT_OUTSIDE_SYSCALL;
		submit(&e, sizeof(e), PROBE_NET);
		return;
	}
	if (connect_calls.update(&tid, &e))
		count_lost(PROBE_NET);
}

/* Allowed unless a response in force refuses it (bpf/response.h): the refused connect is
 * still reported, with its EPERM. */
int cgroup__connect4(struct bpf_sock_addr *ctx)
{
	remember_connect(ctx, AF_INET);
	return response_allows_connect(ctx, AF_INET);
}

int cgroup__connect6(struct bpf_sock_addr *ctx)
{
	remember_connect(ctx, AF_INET6);
	return response_allows_connect(ctx, AF_INET6);
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
	u32 tid = bpf_get_current_pid_tgid();
	u8 yes = 1;

	in_connect.update(&tid, &yes);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct connect_event *e = connect_calls.lookup(&tid);

	in_connect.delete(&tid);
	if (!e)
		return 0;
	if (!connect_admit(e->family, e->daddr)) {
		connect_calls.delete(&tid);
		return 0;
	}
	fill_header(&e->hdr, EVENT_CONNECT);
	e->retval = args->ret;
	submit(e, sizeof(*e), PROBE_NET);
	connect_calls.delete(&tid);
	return 0;
}
