/* exec probe family, exit side: each exec's result, and argv read again from the new
 * image's stack when entry could not read it whole.
 *
 * At a successful execve's exit the tracepoint runs in the new image, before any of its code:
 * its user stack pointer points at argc, then argv[], NULL, envp[], NULL, auxv; the argv
 * strings lie contiguous from argv[0] up to envp[0] (or, with no environment, up to the file
 * name the kernel copied, AT_EXECFN). The kernel wrote all of it during the exec, so the pages
 * are present, and the program has not run yet, so it cannot have rewritten them: unlike
 * /proc/<pid>/cmdline, which it can change before anyone reads it. */
#ifdef HAVE_STACK_ARGV
#include <asm/ptrace.h>
#endif

#define AT_NULL 0
#define AT_EXECFN 31
/* auxv has about 20 entries on x86-64 and arm64; AT_EXECFN is among the last. */
#define AUXV_SCAN_MAX 48

BPF_PERCPU_ARRAY(argv_chunk_scratch, struct exec_argv_event, 1);

#ifdef HAVE_STACK_ARGV
/* The user stack pointer of the current task, from its saved registers (the architecture's
 * user_stack_pointer(), regs->sp on x86-64). bpf_task_pt_regs gives a BTF pointer: the
 * verifier checks the field access against the running kernel's BTF. */
static __always_inline u64 new_image_stack_pointer(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();

	return user_stack_pointer((struct pt_regs *)bpf_task_pt_regs(task));
}
#endif

/* The end of the argv strings: envp[0], or AT_EXECFN when the environment is empty. */
static __always_inline u64 argv_strings_end(u64 sp, u64 argc)
{
	u64 at = sp + 8 * (argc + 2);  /* &envp[0] */
	u64 envp0 = 0, aux[2];

	if (bpf_probe_read_user(&envp0, sizeof(envp0), (void *)at))
		return 0;
	if (envp0)
		return envp0;
	at += 8;  /* auxv: (type, value) pairs up to AT_NULL */
	for (int i = 0; i < AUXV_SCAN_MAX; i++) {
		if (bpf_probe_read_user(aux, sizeof(aux), (void *)(at + 16 * i)) || aux[0] == AT_NULL)
			return 0;
		if (aux[0] == AT_EXECFN)
			return aux[1];
	}
	return 0;
}

/* Sends the argv strings as exec_argv_events and notes what was sent in `x`. */
static __always_inline void send_stack_argv(struct exec_event *x)
{
#ifdef HAVE_STACK_ARGV
	u32 zero = 0;
	struct exec_argv_event *c = argv_chunk_scratch.lookup(&zero);
	u64 sp = new_image_stack_pointer(), argc = 0, start = 0;

	if (!c || bpf_probe_read_user(&argc, sizeof(argc), (void *)sp) ||
	    bpf_probe_read_user(&start, sizeof(start), (void *)(sp + 8)))
		goto unreadable;
	u64 end = argv_strings_end(sp, argc);
	if (!start || end < start)
		goto unreadable;
	u64 total = end - start;
	if (total > ARGV_STACK_MAX) {
		x->flags |= EXEC_STACK_TRUNCATED;
		total = ARGV_STACK_MAX;
	}
	if (!stack_argv_admit(budget_of(x->hdr.lineage_cgroup_id, x->hdr.cgroup_id),
			      (total + ARGV_STACK_CHUNK - 1) / ARGV_STACK_CHUNK)) {
		x->flags |= EXEC_STACK_HELD_BACK;
		return;
	}
	fill_header(&c->hdr, EVENT_EXEC_ARGV);
	for (u32 i = 0; i < ARGV_STACK_CHUNKS; i++) {
		u32 off = i * ARGV_STACK_CHUNK;
		if (off >= total)
			break;
		u32 left = total - off;
		/* In [1, ARGV_STACK_CHUNK] in a form the verifier can follow (left > 0 here). */
		u32 n = left >= ARGV_STACK_CHUNK ? ARGV_STACK_CHUNK : ((left - 1) & (ARGV_STACK_CHUNK - 1)) + 1;
		if (bpf_probe_read_user(c->data, n, (void *)(start + off)))
			goto unreadable;
		c->offset = off;
		c->size = n;
		submit(c, offsetof(struct exec_argv_event, data) + n, PROBE_EXEC);
	}
	x->flags |= EXEC_STACK_ARGV;
	x->stack_argc = argc;
	x->stack_size = total;
	return;
unreadable:
#endif
	x->flags |= EXEC_STACK_UNREADABLE;
}

static __always_inline int exec_exit(long ret)
{
	struct exec_event e = {};
	u32 tgid = bpf_get_current_pid_tgid() >> 32;

	fill_header(&e.hdr, EVENT_EXEC);
	e.retval = ret;
	/* Every exec pays this one delete; only those entry flagged pay for the stack read. */
	if (argv_incomplete.delete(&tgid) == 0 && ret == 0)
		send_stack_argv(&e);
	submit(&e, sizeof(e), PROBE_EXEC);
	return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve)
{
	return exec_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat)
{
	return exec_exit(args->ret);
}
