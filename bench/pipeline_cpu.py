"""CPU of the userspace pipeline per 100k events, without the kernel: `python -m bench.pipeline_cpu`.

Raw records as the probes write them (a refused-connect storm: socket+connect; an exec
storm: fork, exec args, exec, exit) go through the agent's Pipeline with the shipped rules,
the JSON Lines sink (to /dev/null) and the sandbox history, as `ebpfguard run` wires them:
detection through the DetectWorker (on the main loop unless it may wait on a file; here no
host file is read, so the worker takes only what the main loop's time budget leaves it), the
history written at the end of each turn, turns of a drain's worth of records. The figure is
this process's CPU time (time.process_time, every thread), so a busy shared machine stretches
the wall clock but not the figure. `--profile` prints cProfile's top functions; cProfile sees
one thread, so there detection runs inline.
Needs no root: the host is a temporary cgroup and /proc tree.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import struct
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ebpfguard.agent import MAX_RECORDS_PER_DRAIN, URGENT_KINDS, Pipeline
from ebpfguard.config import load_config
from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.worker import DetectWorker
from ebpfguard.enrich.enricher import Enricher
from ebpfguard.enrich.proctable import ProcessTable
from ebpfguard.enrich.sandbox import CgroupIndex
from ebpfguard.enrich.sandbox_tracker import SandboxTracker
from ebpfguard.kernel import events
from ebpfguard.kernel.events import C
from ebpfguard.outputs.history import HistoryBounds, SandboxHistory
from ebpfguard.outputs.sinks import FanOut, HeldUntilTurnEnd, JsonLinesSink
from ebpfguard.outputs.stats import PipelineStats, RateLimitedWarnings

KTIME = 1_000_000_000
ECONNREFUSED = 111


class _Clock:
    def wall_ns(self, ktime_ns: int) -> int:
        return 1_700_000_000_000_000_000 + ktime_ns

    def now_ktime_ns(self) -> int:
        return KTIME


def _header(kind: int, cgroup_id: int, pid: int, comm: bytes) -> bytes:
    return struct.pack(events.EVENT_HEADER.fmt, KTIME, cgroup_id, cgroup_id, kind, pid, pid, 0, comm)


def connect_storm(cgroup_id: int, pid: int) -> Iterator[bytes]:
    """socket + refused connect to 127.0.0.1, as the connect probes write them (2 events)."""
    sock = _header(C["EVENT_SOCKET"], cgroup_id, pid, b"storm") + struct.pack("<iiii", 2, 1, 0, 3)
    fmt = "<" + "".join(t for _, t in events.CONNECT_EVENT.fields[len(events.EVENT_HEADER.fields):])
    daddr = bytes([127, 0, 0, 1]).ljust(16, b"\0")
    cookie = 1
    while True:
        yield sock
        yield _header(C["EVENT_CONNECT"], cgroup_id, pid, b"storm") + struct.pack(
            fmt, cookie, 4026531840, 2, 40000, -ECONNREFUSED, daddr, 0, 0)
        cookie += 1


def exec_storm(cgroup_id: int, parent: int) -> Iterator[bytes]:
    """fork, exec args, exec, exit of a short-lived /bin/true child (2 events per round)."""
    argv = (b"/bin/true", b"--flag", b"value")
    args = b"".join(a + b"\0" for a in argv)
    pid = 10_000
    while True:
        pid = pid + 1 if pid < 4_000_000 else 10_000
        yield _header(C["EVENT_FORK"], cgroup_id, parent, b"storm") + struct.pack("<IIQ", pid, 0, 0)
        yield (_header(C["EVENT_EXEC_ARGS"], cgroup_id, pid, b"storm") + struct.pack("<IIII", len(argv), 0, len(args), 0)
               + b"/bin/true".ljust(C["FILENAME_LEN"], b"\0") + args)
        yield _header(C["EVENT_EXEC"], cgroup_id, pid, b"true") + struct.pack("<iIII", 0, 0, 0, 0)
        yield _header(C["EVENT_EXIT"], cgroup_id, pid, b"true") + struct.pack("<iI", 0, C["EXIT_HAS_CODE"])


RECORDS_PER_EVENT = {"connect": 1, "connect-host": 1, "exec": 2}
# The storm from a sandbox (its connects to loopback are found and de-duplicated by
# egress.internal), the same from a host service (as the full bench's rounds run it), an exec storm.
STORMS: dict[str, Callable[[int, int], Iterator[bytes]]] = {
    "connect": connect_storm, "connect-host": connect_storm, "exec": exec_storm}


def _host(root: Path, sandboxed: bool = True) -> tuple[ProcessTable, CgroupIndex, int]:
    cgroups = root / "cgroup" / ("sandbox-bench/inner" if sandboxed else "system.slice/storm.service")
    cgroups.mkdir(parents=True)
    for pid, ppid, comm in ((1, 0, "init"), (100, 1, "storm")):
        d = root / "proc" / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} ({comm}) S {ppid} 0 0\n")
        (d / "cmdline").write_bytes(comm.encode() + b"\0")
        os.symlink(f"/usr/bin/{comm}", d / "exe")
    index = CgroupIndex(str(root / "cgroup"))
    index._by_handle.works = False  # a plain directory tree has no kernfs file handles
    return ProcessTable(proc_root=str(root / "proc")), index, cgroups.stat().st_ino


def measure(storm: str, n_events: int, profile: bool = False) -> dict:
    """Feed `n_events` events' worth of one storm's records; CPU seconds per 100k events."""
    config = load_config()
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "a", encoding="ascii") as devnull:
        procs, index, cgroup_id = _host(Path(tmp), sandboxed=not storm.endswith("-host"))
        enricher = Enricher("bench", procs, index, config["sandbox"], _Clock(), host_netns_cookie=4026531840)
        stats = PipelineStats()
        sink = FanOut(JsonLinesSink(devnull, stats), HeldUntilTurnEnd(SandboxHistory(HistoryBounds.from_config(config["history"]))))
        engine = DetectionEngine(load_rules(), config["detect"])
        pipeline = Pipeline(enricher, sink, stats, SandboxTracker(100, 900.0, max_pids=100_000),
                            RateLimitedWarnings(60, io.StringIO()), engine.process, now_ktime_ns=_Clock().now_ktime_ns,
                            detects=engine.detects)
        worker = None
        if not profile:
            worker = DetectWorker(pipeline.run_detect, 1 << 30, 1.0, on_overrun=lambda: None, on_full=lambda: None,
                                  urgent_kinds=URGENT_KINDS, may_wait=engine.may_read_files)
            pipeline.submit = worker.submit
        records = STORMS[storm](cgroup_id, 100)
        _feed(pipeline, sink, worker, [next(records) for _ in range(2000)])
        before = stats.snapshot().events_written
        feed = [next(records) for _ in range(n_events * RECORDS_PER_EVENT[storm])]
        # CPU time, not wall time: on a shared machine preemption would land on random functions.
        profiler = cProfile.Profile(time.process_time) if profile else None
        started = time.process_time()
        if profiler:
            profiler.enable()
        _feed(pipeline, sink, worker, feed)
        if worker is not None:
            worker.stop(timeout_s=600)
        if profiler:
            profiler.disable()
        cpu = time.process_time() - started
        written = stats.snapshot().events_written - before
        out = {"storm": storm, "events": written, "records": len(feed), "cpu_s": cpu,
               "cpu_s_per_100k_events": cpu / max(written, 1) * 1e5, "dropped": dict(stats.snapshot().dropped)}
        if profiler:
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            out["profile"] = text.getvalue()
        return out


def _feed(pipeline: Pipeline, sink: FanOut, worker: Optional[DetectWorker], records: list) -> None:
    """The records in turns of the agent's loop: a drain, the hand-over to detection, the
    alerts found, the sinks' turn-end work."""
    for start in range(0, len(records), MAX_RECORDS_PER_DRAIN):
        pipeline.on_records(records[start:start + MAX_RECORDS_PER_DRAIN])
        if worker is not None:
            worker.flush()
            pipeline.write_alerts(worker.take_alerts())
        sink.flush_if_due()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(f"load average: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    for storm in STORMS:
        result = measure(storm, args.events, args.profile)
        print(f"{storm}: {result['events']} events, {result['cpu_s']:.2f} CPU s, "
              f"{result['cpu_s_per_100k_events']:.2f} CPU s per 100k events, dropped {result['dropped']}")
        if args.profile:
            print(result["profile"])


if __name__ == "__main__":
    main()
