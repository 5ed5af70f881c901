/* Workload driver for the benchmark: one syscall pattern, as fast as it goes or paced, for a
 * fixed time; prints one JSON line: {"workload", "ops", "seconds", "ops_per_s", "ns_per_op"}.
 *
 *   storm exec     SECONDS [RATE] [MINER_EVERY] [MINER_PATH]
 *                                                fork + execve /bin/true (+ a miner-like argv,
 *                                                of MINER_PATH if given: the exec succeeds)
 *   storm connect  SECONDS [RATE]                loopback TCP connect + close, accepted
 *   storm refused  SECONDS [RATE]                loopback connect to a closed port
 *   storm getpgid  SECONDS [RATE]                a syscall no probe traces
 *   storm bulk     SECONDS [FLOWS]               loopback transfer, FLOWS flows one after another
 *
 * RATE 0 (the default) is flat out; otherwise ops are paced to absolute deadlines, so a slow
 * op is caught up rather than lowering the rate. Written in C so the driver itself costs
 * little next to the syscalls it measures. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A command line that ebpfguard's miner.exec rule flags: an exec of a nonexistent path still
 * yields an exec event (retval -ENOENT) and the alert; MINER_PATH makes it a real exec. */
static const char *const miner_args[] = {
	"/tmp/x", "-o", "stratum+tcp://pool.example.net:3333", "-u",
	"48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD",
	"--donate-level", "1", NULL,
};
static const char *const true_args[] = {"/bin/true", NULL};
static char **miner_argv, **true_argv;
static char *const empty_envp[] = {NULL};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* Heap copies of the argument vectors. A forked child shares its parent's file-backed pages
 * (these literals) without their page-table entries, and a tracepoint cannot fault them in:
 * ebpfguard would see an exec with an empty filename and argv. Heap pages are copied at fork. */
static char **heap_argv(const char *const *args)
{
	size_t n = 0;
	while (args[n])
		n++;
	char **argv = calloc(n + 1, sizeof(*argv));
	for (size_t i = 0; argv && i < n; i++)
		argv[i] = strdup(args[i]);
	if (!argv)
		die("calloc");
	return argv;
}

static void exec_once(long i, long miner_every)
{
	int miner = miner_every > 0 && i % miner_every == 0;
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0) {
		execve(miner ? miner_argv[0] : true_argv[0], miner ? miner_argv : true_argv, empty_envp);
		_exit(127);
	}
	if (waitpid(pid, NULL, 0) < 0)
		die("waitpid");
}

static int listener(struct sockaddr_in *addr)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr->sin_port = 0;
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) || listen(fd, 4096)
	    || getsockname(fd, (struct sockaddr *)addr, &len))
		die("listener");
	return fd;
}

/* A port with nothing listening: bound and closed again. */
static void closed_port(struct sockaddr_in *addr)
{
	close(listener(addr));
}

/* The client closes with an RST (linger 0), so no TIME_WAIT piles up and ports never run out. */
static void connect_once(const struct sockaddr_in *addr, int lfd)
{
	struct linger lg = {1, 0};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	int rc = connect(fd, (const struct sockaddr *)addr, sizeof(*addr));
	if (lfd >= 0) {
		if (rc)
			die("connect");
		int a = accept(lfd, NULL, NULL);
		if (a < 0)
			die("accept");
		close(a);
	} else if (rc == 0 || errno != ECONNREFUSED) {
		die("connect to a closed port");
	}
	close(fd);
}

/* One flow: connect, send `bytes` in 64 KiB writes, the reader drains them; both close. */
static void bulk_flow(const struct sockaddr_in *addr, int lfd, long bytes)
{
	static char buf[65536];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || connect(fd, (const struct sockaddr *)addr, sizeof(*addr)))
		die("bulk connect");
	int a = accept(lfd, NULL, NULL);
	if (a < 0)
		die("accept");
	pid_t pid = fork();
	if (pid == 0) {
		close(fd);
		while (read(a, buf, sizeof(buf)) > 0)
			;
		_exit(0);
	}
	close(a);
	for (long sent = 0; sent < bytes;) {
		ssize_t n = write(fd, buf, sizeof(buf));
		if (n <= 0)
			die("bulk write");
		sent += n;
	}
	close(fd);
	waitpid(pid, NULL, 0);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: storm exec|connect|refused|getpgid|bulk SECONDS [RATE|FLOWS] [MINER_EVERY] [MINER_PATH]\n");
		return 2;
	}
	const char *workload = argv[1];
	double seconds = atof(argv[2]);
	long rate = argc > 3 ? atol(argv[3]) : 0;
	long miner_every = argc > 4 ? atol(argv[4]) : 0;
	const char *miner_path = argc > 5 ? argv[5] : NULL;
	struct sockaddr_in addr;
	int lfd = -1;

	if (!strcmp(workload, "connect") || !strcmp(workload, "bulk"))
		lfd = listener(&addr);
	else if (!strcmp(workload, "refused"))
		closed_port(&addr);

	if (!strcmp(workload, "bulk")) {
		/* Bytes, not ops: FLOWS flows share the time; ops_per_s is bytes/s. */
		long flows = rate > 0 ? rate : 16;
		long per_flow = 64L << 20;
		long ops = 0;
		double start = now_s();
		while (now_s() - start < seconds) {
			for (long f = 0; f < flows; f++)
				bulk_flow(&addr, lfd, per_flow);
			ops += flows * per_flow;
		}
		double took = now_s() - start;
		printf("{\"workload\":\"bulk\",\"ops\":%ld,\"seconds\":%.6f,\"ops_per_s\":%.1f,\"ns_per_op\":%.4f}\n",
		       ops, took, ops / took, took * 1e9 / ops);
		return 0;
	}

	long ops = 0;
	double start = now_s(), end = start + seconds;
	double interval = rate > 0 ? 1.0 / rate : 0;
	enum { EXEC, CONNECT, GETPGID } mode;
	if (!strcmp(workload, "exec")) {
		mode = EXEC;
		miner_argv = heap_argv(miner_args);
		true_argv = heap_argv(true_args);
		if (miner_path && !(miner_argv[0] = strdup(miner_path)))
			die("strdup");
	}
	else if (!strcmp(workload, "connect") || !strcmp(workload, "refused"))
		mode = CONNECT;
	else if (!strcmp(workload, "getpgid"))
		mode = GETPGID;
	else {
		fprintf(stderr, "storm: unknown workload %s\n", workload);
		return 2;
	}
	/* Check the clock every `batch` ops: cheap syscalls would otherwise mostly time the clock. */
	long batch = mode == GETPGID ? 1000 : 1;
	for (;;) {
		double t = now_s();
		if (t >= end)
			break;
		if (interval > 0) {
			double due = start + ops * interval;
			if (due > t) {
				struct timespec d = {(time_t)(due - t), (long)((due - t - (time_t)(due - t)) * 1e9)};
				nanosleep(&d, NULL);
			}
		}
		for (long b = 0; b < batch; b++, ops++) {
			if (mode == EXEC)
				exec_once(ops, miner_every);
			else if (mode == CONNECT)
				connect_once(&addr, lfd);
			else
				syscall(SYS_getpgid, 0);
		}
	}
	double took = now_s() - start;
	printf("{\"workload\":\"%s\",\"ops\":%ld,\"seconds\":%.6f,\"ops_per_s\":%.1f,\"ns_per_op\":%.1f}\n",
	       workload, ops, took, ops / took, took * 1e9 / ops);
	return 0;
}
