"""The configurations compared: nothing, ebpfguard, our floors, bpftrace and auditd.

Each is started before a round's workloads and stopped after them. start() returns once the
tracer is attached; stop() says what it lost and what it cost (CPU after start-up, memory).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bench.procinfo import footprint
from bench.tail import WriteTimes

REPO = Path(__file__).resolve().parent.parent
BPFTRACE_SCRIPT = REPO / "bench" / "peers" / "ebpfguard.bt"
AUDIT_KEY = "ebpfguard-bench"
AUDIT_RULES = (
    ["-a", "always,exit", "-F", "arch=b64", "-S", "execve,execveat", "-k", AUDIT_KEY],
    ["-a", "always,exit", "-F", "arch=b64", "-S", "connect", "-k", AUDIT_KEY],
)
READY_TIMEOUT_S = 120  # bcc compiles with clang at start-up: slow on a busy 2-vCPU host


@dataclass
class TracerResult:
    lost: Optional[int] = None       # events the tracer says it lost; None: it cannot tell
    events: Optional[int] = None     # events it wrote
    alerts: Optional[int] = None
    cpu_s: Optional[float] = None    # CPU used between ready and exit (start-up excluded)
    peak_rss_kib: Optional[int] = None
    rss_kib: Optional[int] = None    # resident just before it was stopped
    detail: dict = field(default_factory=dict)


def wait_for_text(path: Path, text: str, proc: Optional[subprocess.Popen], timeout_s: float) -> None:
    """Poll `path` until it holds `text`; fail if the process exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before it was ready: "
                               f"{path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"not ready after {timeout_s:.0f} s: {path}")


class Tracer:
    """No tracer at all: the baseline every ratio is taken against."""

    name = "none"

    def start(self, workdir: Path) -> None:
        """Attach, and return once attached."""

    def stop(self) -> TracerResult:
        return TracerResult()

    def settle(self) -> float:
        """Wait until the tracer has caught up with what the last workload made it do, so the
        next workload pays only for its own hooks; returns the seconds waited."""
        return 0.0


SETTLE_CPU_FRACTION = 0.1  # below this share of a CPU the tracer has caught up
SETTLE_MAX_S = 60.0


class ProcessTracer(Tracer):
    """A tracer that is one process: CPU and memory are that process's."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen] = None
        self.cpu_at_ready = 0.0
        self.stderr_path = Path()

    def launch(self, argv: list[str], workdir: Path, ready_file: Optional[Path] = None,
               ready_text: Optional[str] = "ready") -> None:
        """Start the process; wait for `ready_text` in `ready_file` (default: its stderr)."""
        self.stderr_path = workdir / f"{self.name}.stderr"
        with open(self.stderr_path, "w") as err, open(workdir / f"{self.name}.stdout", "w") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=err)
        if ready_text is not None:
            wait_for_text(ready_file or self.stderr_path, ready_text, self.proc, READY_TIMEOUT_S)
        self.cpu_at_ready = footprint(self.proc.pid).cpu_s

    def settle(self) -> float:
        assert self.proc is not None
        start = time.monotonic()
        cpu = footprint(self.proc.pid).cpu_s
        while time.monotonic() - start < SETTLE_MAX_S:
            time.sleep(0.2)
            now = footprint(self.proc.pid).cpu_s
            if now - cpu < 0.2 * SETTLE_CPU_FRACTION:
                break
            cpu = now
        return time.monotonic() - start

    def terminate(self, sig: int = signal.SIGTERM) -> TracerResult:
        """Stop the process; CPU and peak memory come from its rusage, so nothing after its
        last read of /proc is missed."""
        assert self.proc is not None
        before = footprint(self.proc.pid)
        self.proc.send_signal(sig)
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode not in (0, -sig):
            raise RuntimeError(f"{self.name} exited {self.proc.returncode}: "
                               f"{self.stderr_path.read_text(errors='replace')[-2000:]}")
        return TracerResult(cpu_s=usage.ru_utime + usage.ru_stime - self.cpu_at_ready,
                            peak_rss_kib=usage.ru_maxrss, rss_kib=before.rss_kib)


# The per-cgroup rate limit off: it holds a storm's bulk records back in the kernel (counted,
# not sent) at 1,000 a second per kind, and the question the benchmark asks is what every
# record costs when all of them reach the pipeline (the worst case for the agent). The event
# file is not rotated either: a flat-out storm writes past its 1 GiB bound within a phase, and
# the latency figures watch the one file.
NO_RATE_LIMIT = {"probes": {"rate_limit": {"events_per_s": 0}}, "output": {"max_bytes": 0}}
# The same agent as shipped (its default config): what a host running it pays per operation.
SHIPPED = "ebpfguard-shipped"


class Ebpfguard(ProcessTracer):
    """`ebpfguard run` with every probe family and detector, writing to a file; with
    `watch_writes`, each line's write time is watched from outside for the latency figures.
    The watcher is the benchmark's own work, a wakeup per write of the agent's, so the rounds
    that measure what the agent costs run without it (bench/run.py's latency round has it)."""

    name = "ebpfguard"

    def __init__(self, output: Optional[str] = None, profile: Optional[Path] = None,
                 config: Optional[dict] = None, name: str = "ebpfguard", watch_writes: bool = True) -> None:
        super().__init__()
        self.name = name
        self.output_override = output
        self.profile = profile
        self.config = config  # overlays the default (`--config`); None: the default as shipped
        self.watch_writes = watch_writes and output is None
        self.output = Path()
        self.write_times: Optional[WriteTimes] = None

    def start(self, workdir: Path) -> None:
        self.output = Path(self.output_override or workdir / "ebpfguard.jsonl")
        if self.output_override is None:
            self.output.write_bytes(b"")
        if self.watch_writes:
            self.write_times = WriteTimes(str(self.output))
        main = ["-m", "bench.profiled", str(self.profile)] if self.profile else ["-m", "ebpfguard"]
        # Every server on, as deployed, but on the run's own paths and a free port: another
        # agent on the host (a test, a second benchmark) may hold the defaults.
        servers = ["--socket", str(workdir / "events.sock"), "--control-socket", str(workdir / "control.sock"),
                   "--metrics-addr", "127.0.0.1:0"]
        if self.config is not None:
            (workdir / "config.json").write_text(json.dumps(self.config))  # JSON is YAML
            servers += ["--config", str(workdir / "config.json")]
        self.launch([sys.executable, *main, "run", "--output", str(self.output), *servers], workdir)

    def events_written(self) -> int:
        """Events the agent has written so far, from its metrics endpoint."""
        found = re.search(r"metrics on (http://\S+)", self.stderr_path.read_text(errors="replace"))
        if not found:
            raise RuntimeError(f"ebpfguard printed no metrics address: {self.stderr_path}")
        with urllib.request.urlopen(found.group(1), timeout=10) as page:
            text = page.read().decode()
        return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("ebpfguard_events_total{")))

    def stop(self) -> TracerResult:
        result = self.terminate()
        if self.write_times:
            self.write_times.stop()
        summary = re.search(r"ebpfguard: stopped: (\{.*\})", self.stderr_path.read_text(errors="replace"))
        if not summary:
            raise RuntimeError(f"ebpfguard printed no summary: {self.stderr_path}")
        stats = json.loads(summary.group(1))
        result.lost = sum(stats["lost"].values()) + sum(stats["dropped"].values())
        result.events, result.alerts = stats["events"], stats["alerts"]
        result.detail = {"lost": stats["lost"], "dropped": stats["dropped"], "held_back": stats.get("held_back", 0)}
        return result


class Floor(ProcessTracer):
    """Our hooks without our userspace (bench/floor.py): `empty` bodies, or `unread` rings."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.name = f"floor-{kind}"

    def start(self, workdir: Path) -> None:
        self.launch([sys.executable, "-m", "bench.floor", self.kind], workdir)

    def stop(self) -> TracerResult:
        result = self.terminate()
        lost = json.loads((self.stderr_path.parent / f"{self.name}.stdout").read_text())["lost"]
        result.lost = sum(lost.values()) if self.kind == "unread" else None
        return result


class Bpftrace(ProcessTracer):
    """bpftrace (the distro's) at the same tracepoints, printing a line per event to a file."""

    name = "bpftrace"

    def start(self, workdir: Path) -> None:
        # Its stdout, not `-o FILE`: with -o bpftrace buffers its lines, and the `ready` that
        # BEGIN prints could sit unwritten past the start-up timeout (seen on a quiet host).
        self.output = workdir / f"{self.name}.stdout"
        self.launch(["bpftrace", str(BPFTRACE_SCRIPT)], workdir, ready_file=self.output)

    def stop(self) -> TracerResult:
        result = self.terminate(signal.SIGINT)
        text = self.output.read_text(errors="replace")
        # bpftrace reports perf-buffer overruns as "Lost N events" lines in its output.
        result.lost = sum(int(n) for n in re.findall(r"^Lost (\d+) events", text, re.M))
        result.events = sum(1 for line in text.splitlines() if line[:1].isdigit())
        return result


def audit_status() -> dict[str, int]:
    """`auditctl -s` as numbers (enabled, pid, lost, backlog...)."""
    out = subprocess.run(["auditctl", "-s"], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"^(\w+) (\d+)$", out, re.M)}


class Auditd(ProcessTracer):
    """auditd (the distro's, in the foreground as our child) with an execve and a connect rule.
    Runs only during its rounds: stop() removes the rules, stops the daemon and puts the
    kernel's audit switch back as it was."""

    name = "auditd"

    def __init__(self) -> None:
        super().__init__()
        self.enabled_before = 0
        self.lost_before = 0

    def start(self, workdir: Path) -> None:
        self.enabled_before = audit_status().get("enabled", 0)
        self.launch(["auditd", "-n"], workdir, ready_text=None)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while audit_status().get("pid") != self.proc.pid:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"auditd did not register with the kernel: {self.stderr_path}")
            time.sleep(0.1)
        auditctl("-D")
        for rule in AUDIT_RULES:
            auditctl(*rule)
        self.lost_before = audit_status()["lost"]

    def stop(self) -> TracerResult:
        status = audit_status()
        auditctl("-D")
        result = self.terminate()
        auditctl("-e", str(self.enabled_before))
        result.lost = status["lost"] - self.lost_before
        result.detail = {"backlog_limit": status.get("backlog_limit")}
        return result


def auditctl(*args: str) -> None:
    subprocess.run(["auditctl", *args], capture_output=True, check=True)


def all_tracers(with_peers: bool = True) -> list[Tracer]:
    """Every configuration, in the order a round runs them."""
    tracers: list[Tracer] = [Tracer(), Ebpfguard(config=NO_RATE_LIMIT, watch_writes=False),
                             Ebpfguard(name=SHIPPED, watch_writes=False), Floor("empty"), Floor("unread")]
    if with_peers:
        tracers += [Bpftrace(), Auditd()]
    return tracers
