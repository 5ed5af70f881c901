/* The one definition of every event that leaves the kernel.
 *
 * Shared by the probes (bpf/<family>.bpf.c) and by userspace: ebpfguard/events.py reads the
 * #defines and enums below from this file and mirrors the structs field by field, and
 * tests/unit/test_event_layout.py compiles this header to check that sizes and offsets agree.
 * Fixed-width types only, so the layout is the same for the BPF target and the host. */
#ifndef EBPFGUARD_EVENTS_H
#define EBPFGUARD_EVENTS_H

#define TASK_COMM_LEN 16

/* argv bound: up to 64 arguments, 16 KiB in all, 4 KiB (with its NUL) each. Arguments are
 * packed one after another, so a typical exec costs a few hundred bytes of ring buffer, and a
 * long `sh -c` script or base64 payload still arrives whole. Whatever is cut is flagged with
 * EXEC_ARGV_TRUNCATED, so a padded command line cannot hide its tail unseen. */
#define ARGV_MAX_ARGS 64
#define ARGV_ARG_READ 4096
#define ARGV_BUF_LEN 16384
#define FILENAME_LEN 256

/* Past those bounds, or when entry could not read argv at all, argv is read again at
 * execve's exit from the new image's initial stack, where the kernel itself just wrote it
 * (so its pages are present) and before any of the new program's code has run (so the
 * program cannot rewrite it first). Sent as ARGV_STACK_CHUNK-byte pieces, up to
 * ARGV_STACK_MAX bytes in all: the kernel takes up to 128 KiB per argument and about
 * 2 MiB in all (a quarter of the stack rlimit); past ARGV_STACK_MAX the tail is cut and
 * flagged (EXEC_STACK_TRUNCATED), itself a signal. */
#define ARGV_STACK_CHUNK 8192
#define ARGV_STACK_CHUNKS 32
#define ARGV_STACK_MAX (ARGV_STACK_CHUNK * ARGV_STACK_CHUNKS)

enum event_kind {
	EVENT_EXEC = 1,        /* at execve's exit: the result */
	EVENT_EXEC_ARGS = 6,   /* at execve's entry: what was asked for */
	EVENT_FLOW = 7,
	EVENT_OPEN = 8,
	EVENT_FORK = 2,
	EVENT_EXIT = 3,
	EVENT_SOCKET = 4,
	EVENT_CONNECT = 5,
	EVENT_EXEC_ARGV = 9,   /* at execve's exit: a piece of argv from the new image's stack */
	EVENT_ESCAPE = 20,     /* a sandboxed process reaching for a way out (guard_event) */
	EVENT_TAMPER = 21,     /* a sandboxed process acting on the agent or outside (guard_event) */
};

/* Probe families: each counts its own ring-buffer losses. */
enum probe_family {
	PROBE_EXEC = 0,
	PROBE_PROC = 1,
	PROBE_NET = 2,
	PROBE_FLOW = 3,
	PROBE_OPEN = 4,
	PROBE_ESCAPE = 5,
	PROBE_TAMPER = 6,
	PROBE_FAMILIES = 7,
};

/* Counters of the lineage map (common.h), read by userspace: lineage_counts[LINEAGE_*]. */
#define LINEAGE_INSERTS 0
#define LINEAGE_DELETES 1
/* Slots of lineage_epoch (common.h): changed by the probes, and by userspace. */
#define LINEAGE_EPOCH_PROBES 0
#define LINEAGE_EPOCH_USERSPACE 1
/* reader_asleep[0] (common.h), written by the ring reader: awake; asleep for the records that
 * can raise an alert; asleep for any record (an idle reader's long sleep). */
#define READER_AWAKE 0
#define READER_ASLEEP 1
#define READER_ASLEEP_DEEP 2

/* exec_event.flags */
#define EXEC_ARGV_TRUNCATED 0x1     /* more args, or longer ones, than the bounds above */
#define EXEC_FILENAME_TRUNCATED 0x2
#define EXEC_VIA_EXECVEAT 0x4
/* A string the kernel could not read without a page fault (BPF cannot fault pages in): argv
 * strings in a freshly forked child's untouched pages, say. Userspace then reads the new
 * image's /proc/<pid>/cmdline instead. */
#define EXEC_ARGV_UNREADABLE 0x8
#define EXEC_FILENAME_UNREADABLE 0x10

/* exec_event.flags */
#define EXEC_STACK_ARGV 0x1         /* argv follows from the stack: exec_argv_events came first */
#define EXEC_STACK_TRUNCATED 0x2    /* more than ARGV_STACK_MAX bytes: the rest is not sent */
#define EXEC_STACK_UNREADABLE 0x4   /* the stack could not be read: argv is what entry saw */
#define EXEC_STACK_HELD_BACK 0x8    /* the cgroup's stack-read budget was spent: not read */

/* Counts per cgroup that userspace reads from maps (not records): what a per-sandbox rate
 * limit held back (kind: the EVENT_* not sent) and what a full ring lost (kind: PROBE_*). */
struct cgroup_count_key {
	__u64 cgroup_id;
	__u32 kind;
	__u32 _pad;
};

/* exit_event.flags */
#define EXIT_HAS_CODE 0x1           /* the process called exit_group/exit; absent when killed */

struct event_header {
	__u64 ktime_ns;   /* bpf_ktime_get_boot_ns() when the event happened */
	__u64 cgroup_id;  /* cgroup v2 id: inode number of the cgroup's directory */
	/* The cgroup the process's lineage was in when it entered a sandbox (the lineage map,
	 * common.h); it follows the process and its descendants wherever they move. 0: none. */
	__u64 lineage_cgroup_id;
	__u32 kind;       /* enum event_kind */
	__u32 pid;        /* thread-group id (the process), host pid namespace */
	__u32 tid;
	__u32 uid;
	char comm[TASK_COMM_LEN];
};

/* An exec is two records from the same thread group: its arguments, sent at entry (after a
 * successful exec the caller's memory is gone), then its result. Userspace joins them by pid:
 * staging 16 KiB per in-flight exec in a kernel hash map would pin megabytes for nothing. */
struct exec_args_event {
	struct event_header hdr;
	__u32 argc;       /* arguments captured in args */
	__u32 flags;      /* EXEC_* */
	__u32 args_size;  /* bytes used in args: argc NUL-terminated strings */
	__u32 _pad;
	char filename[FILENAME_LEN];
	char args[ARGV_BUF_LEN];  /* only args_size bytes of it are sent */
};

struct exec_event {
	struct event_header hdr;
	__s32 retval;     /* 0, or -errno for a failed exec */
	__u32 flags;      /* EXEC_STACK_* */
	__u32 stack_argc; /* argc on the new image's stack (with EXEC_STACK_ARGV) */
	__u32 stack_size; /* bytes of argv strings sent in exec_argv_events */
};

/* One piece of the new image's argv strings (NUL-separated, as on its stack), sent at
 * execve's exit before the exec_event it belongs to, in order of offset. */
struct exec_argv_event {
	struct event_header hdr;
	__u32 offset;     /* of this piece in the argv strings */
	__u32 size;       /* bytes used in data */
	char data[ARGV_STACK_CHUNK];  /* only size bytes of it are sent */
};

struct fork_event {
	struct event_header hdr;  /* the parent */
	__u32 child_pid;
	__u32 _pad;
	__u64 clone_flags;
};

struct exit_event {
	struct event_header hdr;
	__s32 exit_code;  /* valid when EXIT_HAS_CODE */
	__u32 flags;      /* EXIT_* */
};

struct socket_event {
	struct event_header hdr;
	__s32 family;
	__s32 type;       /* including SOCK_NONBLOCK / SOCK_CLOEXEC as passed */
	__s32 protocol;
	__s32 retval;     /* the new fd, or -errno */
};

struct connect_event {
	struct event_header hdr;
	__u64 sock_cookie;  /* bpf_get_socket_cookie(): names the socket across probes */
	__u64 netns_cookie; /* bpf_get_netns_cookie(): compared with the host's in userspace */
	__u16 family;       /* AF_INET or AF_INET6 */
	__u16 dport;        /* host byte order */
	__s32 retval;       /* 0, or -errno (-EINPROGRESS for a non-blocking connect) */
	__u8 daddr[16];     /* IPv4 in the first 4 bytes */
	__u32 flags;        /* CONNECT_* */
	__u32 _pad;
};

/* connect_event.flags */
#define CONNECT_OUTSIDE_SYSCALL 0x1  /* not from connect(2) (io_uring, say): no result to wait for */

/* Flow capture bound: the first FLOW_PAYLOAD_MAX bytes of each of the first FLOW_SEGMENTS_MAX
 * data segments per direction of a flow that passes the in-kernel prefilter. 512 bytes hold a
 * Monero login (its 95-character wallet comes before the `agent` field) and a ClientHello's SNI. */
#define FLOW_PAYLOAD_MAX 512
#define FLOW_SEGMENTS_MAX 4

enum flow_direction {
	FLOW_EGRESS = 0,
	FLOW_INGRESS = 1,
};

/* flow_event.flags */
#define FLOW_OWNER_UNKNOWN 0x1      /* no socket-creation record: pid, uid and comm are 0 */

struct flow_event {
	struct event_header hdr;  /* the socket's creator (process context is gone in softirq) */
	__u64 sock_cookie;
	__u32 payload_len;  /* the segment's payload bytes on the wire */
	__u32 captured;     /* bytes of it in payload */
	__u16 family;
	__u16 dport;        /* the remote port, host byte order, in either direction */
	__u16 sport;        /* the local port */
	__u8 direction;     /* enum flow_direction */
	__u8 protocol;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 seq;           /* data segment index within this flow and direction */
	__u8 flags;         /* FLOW_* */
	__u16 _pad;
	__u32 _pad2;
	__u8 daddr[16];     /* the remote address; IPv4 in the first 4 bytes */
	__u8 payload[FLOW_PAYLOAD_MAX];  /* only `captured` bytes of it are sent */
};

/* Paths the open probe reports (filtered in the kernel): GPUs and accelerators, MSR devices,
 * and writes to the MSR module's and the huge page pools' settings. */
#define OPEN_PATH_LEN 64

struct open_event {
	struct event_header hdr;
	__s32 retval;     /* the fd, or -errno */
	__u32 flags;      /* open(2) flags */
	char filename[OPEN_PATH_LEN];  /* as passed */
};

/* Escape and tamper attempts (bpf/escape.bpf.c, bpf/tamper.bpf.c, and the escape-path block
 * of bpf/open.bpf.c): one layout, `what` says which. Sent at syscall entry: an attempt that
 * fails is still an attempt. */
enum guard_what {
	ESCAPE_CGROUP_MOVE = 1,  /* target_pid moved to target_cgroup_id (path) */
	ESCAPE_SETNS = 2,        /* arg: nstype, aux: the fd */
	ESCAPE_UNSHARE = 3,      /* arg: unshare flags */
	ESCAPE_CLONE_NS = 4,     /* arg: clone flags with CLONE_NEW* */
	ESCAPE_MOUNT = 5,        /* arg: mount flags, path: target, detail: fs type */
	ESCAPE_FSMOUNT = 6,      /* arg: flags */
	ESCAPE_MOVE_MOUNT = 7,   /* arg: flags, path: target */
	ESCAPE_PATH_WRITE = 8,   /* arg: open flags, path: as passed */
	TAMPER_BPF = 16,         /* aux: the bpf(2) command */
	TAMPER_PTRACE = 17,      /* aux: the request, target_pid */
	TAMPER_PROCESS_VM_WRITEV = 18, /* process_vm_writev, target_pid */
	TAMPER_SIGNAL = 19,      /* kill/tkill/tgkill to the agent (or -1), aux: the signal */
	TAMPER_PIDFD_OPEN = 20,  /* pidfd_open of the agent */
	TAMPER_PERF_EVENT_OPEN = 21, /* perf_event_open, target_pid: its pid argument */
	TAMPER_MODULE = 22,      /* init_module, finit_module, delete_module */
};

#define GUARD_PATH_LEN 128
#define GUARD_DETAIL_LEN 32

struct guard_event {
	struct event_header hdr;
	__u32 what;             /* enum guard_what */
	__s32 target_pid;       /* the process acted on, as the caller named it; 0: none */
	__u64 arg;              /* flags, per `what` */
	__s64 aux;              /* fd, command, request or signal, per `what` */
	__u64 target_cgroup_id; /* cgroup move: the destination */
	__u64 target_lineage_cgroup_id;  /* the target's lineage cgroup (0: none or unknown) */
	char path[GUARD_PATH_LEN];
	char detail[GUARD_DETAIL_LEN];
};

#endif
