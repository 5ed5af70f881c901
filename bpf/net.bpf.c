/* net probe family: socket() and connect() with their results.
 *
 * The destination comes from the cgroup/connect4|6 hooks, which see the address the kernel
 * will really use (read after the kernel copied it from userspace). A syscall tracepoint
 * reading the user's sockaddr can be fooled by a thread that rewrites it in between (a
 * time-of-check/time-of-use race). The result comes from the connect syscall's exit; a
 * connect made outside connect(2) (io_uring) is sent from the hook, without a result.
 *
 * What a thread has in flight between a syscall's entry, the hook and the exit lives in the
 * thread's own local storage (BPF_MAP_TYPE_TASK_STORAGE, HAVE_TASK_STORAGE, probed at load):
 * one pointer lookup per hook instead of inserting into and deleting from a table per call.
 * Where the kernel lacks it, a table by thread id stands in. */
#include "common.h"
#include "response.h"

#define AF_INET 2
#define AF_INET6 10

struct net_call {
	struct connect_event connect;  /* the destination, from the cgroup hook */
	s32 family, type, protocol;    /* socket(2)'s arguments */
	u8 in_socket;   /* inside socket(2) */
	u8 in_connect;  /* inside connect(2); the hook also runs for connects no syscall made */
	u8 connected;   /* the hook filled `connect` during this connect(2) */
	struct lineage_memo lineage;   /* also read by cgroup/sock_create (flow.bpf.c) */
};

#ifdef HAVE_TASK_STORAGE
BPF_TASK_STORAGE(net_calls, struct net_call);

static __always_inline struct net_call *net_call(int create)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	return net_calls.task_storage_get(task, 0, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}
#else
/* LRU: a thread that is gone cannot pin an entry. */
BPF_TABLE("lru_hash", u32, struct net_call, net_calls, 10240);

static __always_inline struct net_call *net_call(int create)
{
	u32 tid = bpf_get_current_pid_tgid();
	struct net_call *c = net_calls.lookup(&tid);
	struct net_call fresh = {};

	if (c || !create)
		return c;
	net_calls.update(&tid, &fresh);
	return net_calls.lookup(&tid);
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_socket)
{
	struct net_call *c = net_call(1);

	if (!c)
		return 0;
	c->family = args->family;
	c->type = args->type;
	c->protocol = args->protocol;
	c->in_socket = 1;
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket)
{
	struct net_call *c = net_call(0);

	if (!c || !c->in_socket)
		return 0;
	c->in_socket = 0;
	u64 cgroup_id = bpf_get_current_cgroup_id();
	u64 lineage = lineage_remembered(&c->lineage, cgroup_id);
	if (!bulk_admit(budget_of(lineage, cgroup_id), EVENT_SOCKET))
		return 0;
	struct socket_event e = {};
	fill_header_in(&e.hdr, EVENT_SOCKET, lineage, cgroup_id);
	e.family = c->family;
	e.type = c->type;
	e.protocol = c->protocol;
	e.retval = args->ret;
	submit(&e, sizeof(e), PROBE_NET);
	return 0;
}

static __always_inline void remember_connect(struct bpf_sock_addr *ctx, u16 family)
{
	struct net_call *c = net_call(0);
	struct connect_event outside = {};
	int in_syscall = c && c->in_connect;
	struct connect_event *e = in_syscall ? &c->connect : &outside;

	if (in_syscall)
		__builtin_memset(e, 0, sizeof(*e));  /* an earlier call's fields are still there */
	e->family = family;
	e->sock_cookie = bpf_get_socket_cookie(ctx);
	e->netns_cookie = bpf_get_netns_cookie(ctx);
	e->dport = bpf_ntohs(ctx->user_port);
	if (family == AF_INET) {
		__builtin_memcpy(e->daddr, &ctx->user_ip4, 4);
	} else {
		u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
		__builtin_memcpy(e->daddr, &a0, 4);
		__builtin_memcpy(e->daddr + 4, &a1, 4);
		__builtin_memcpy(e->daddr + 8, &a2, 4);
		__builtin_memcpy(e->daddr + 12, &a3, 4);
	}
	if (in_syscall) {
		c->connected = 1;
		return;
	}
	u64 cgroup_id = bpf_get_current_cgroup_id();
	u64 lineage = c ? lineage_remembered(&c->lineage, cgroup_id) : lineage_of_current();
	if (!connect_admit(family, e->daddr, budget_of(lineage, cgroup_id)))
		return;
	fill_header_in(&e->hdr, EVENT_CONNECT, lineage, cgroup_id);
	e->flags = CONNECT_OUTSIDE_SYSCALL;
	submit(e, sizeof(*e), PROBE_NET);
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
	struct net_call *c = net_call(1);

	if (c) {
		c->in_connect = 1;
		c->connected = 0;
	}
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
	struct net_call *c = net_call(0);

	if (!c || !c->in_connect)
		return 0;
	c->in_connect = 0;
	if (!c->connected)
		return 0;
	c->connected = 0;
	struct connect_event *e = &c->connect;
	u64 cgroup_id = bpf_get_current_cgroup_id();
	u64 lineage = lineage_remembered(&c->lineage, cgroup_id);
	if (!connect_admit(e->family, e->daddr, budget_of(lineage, cgroup_id)))
		return 0;
	fill_header_in(&e->hdr, EVENT_CONNECT, lineage, cgroup_id);
	e->retval = args->ret;
	e->flags = 0;
	submit(e, sizeof(*e), PROBE_NET);
	return 0;
}
