"""Alert latency from a sandbox, alone and under a connect storm, and the agent's idle CPU.

One agent: first its CPU over IDLE_S with nothing running, then miner execs from a sandbox
cgroup (`sandbox-bench-*`, every exec a real one with a miner's command line, so each raises
miner.exec) at ALERT_RATE a second, with no other load; then the same while a loopback connect
storm runs flat out from the host. The per-cgroup rate limit is off, so every record of the
storm reaches the agent (the hard case: the bulk ring busy). Latency is from the exec's kernel
time (the alert's `event` `time`) to the moment the alert's line appeared in the output file,
seen from outside the agent.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from bench.latency import latencies_by_window, latency_summary
from bench.procinfo import footprint, wakeups
from bench.tracers import NO_RATE_LIMIT, Ebpfguard
from bench.workloads import WORKLOADS, Run, Workload, run_workload
from ebpfguard.enrich.sandbox import cgroup_root_from_proc

ALERT_RATE = 20          # miner execs a second
ALERT_S = 10.0           # of them: 200 execs
STORM_LEAD_S = 1.0       # the connect storm starts this long before the execs, and ends as long after
IDLE_S = 10.0


def sandbox_cgroup() -> Path:
    """A new, empty sandbox cgroup (the default config's `sandbox-*` pattern names it)."""
    root = cgroup_root_from_proc()
    if root is None:
        raise RuntimeError("no cgroup2 mount in /proc/self/mountinfo")
    path = Path(root) / f"sandbox-bench-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def remove_cgroup(path: Path) -> None:
    """rmdir, retried while the last exited processes are still being released."""
    for _ in range(50):
        try:
            path.rmdir()
            return
        except OSError:
            time.sleep(0.1)
    path.rmdir()


def from_sandbox_or_not_alert(sandbox: str) -> Callable[[dict], bool]:
    """Keeps every event, and the alerts of `sandbox` only: on a shared host another tool's
    miner-like test must not count as one of ours."""
    def keep(record: dict) -> bool:
        if record.get("kind") != "alert":
            return True
        return (record.get("event", {}).get("sandbox") or {}).get("name") == sandbox
    return keep


def row(load: str, run: Run, latency: dict[str, list[int]], storm: Optional[Run] = None) -> dict:
    """One line of the table: the execs, the alerts they raised and how late those were written."""
    return {"load": load, "execs": run.ops, "rate": ALERT_RATE, "alerts": len(latency["alert"]),
            "alert_latency": latency_summary(latency["alert"]), "event_latency": latency_summary(latency["event"]),
            "storm_ops_per_s": storm.ops_per_s if storm else None}


def run_alert_latency(driver: Path, raw: Path, alert_s: float = ALERT_S, idle_s: float = IDLE_S) -> dict:
    """Idle CPU, then alert latency with no other load and during a flat-out connect storm."""
    workdir = raw / "alert-latency"
    workdir.mkdir(parents=True, exist_ok=True)
    miner = workdir / "xmrig"
    shutil.copy("/bin/true", miner)
    execs = Workload("exec", "exec", "miner exec from a sandbox", ALERT_RATE, ("1", str(miner)))
    storm = next(w for w in WORKLOADS if w.name == "connect")
    cgroup = sandbox_cgroup()
    agent = Ebpfguard(config=NO_RATE_LIMIT)
    agent.start(workdir)
    try:
        time.sleep(1.0)  # past the start-up's last work
        before, slept = footprint(agent.proc.pid), wakeups(agent.proc.pid)
        time.sleep(idle_s)
        idle_cpu = (footprint(agent.proc.pid).cpu_s - before.cpu_s) / idle_s
        idle_wakeups = (wakeups(agent.proc.pid) - slept) / idle_s
        quiet = replace(run_workload(driver, execs, alert_s, cgroup), workload="quiet")
        agent.settle()
        storms: list[Run] = []
        background = threading.Thread(
            target=lambda: storms.append(run_workload(driver, storm, alert_s + 2 * STORM_LEAD_S)))
        background.start()
        time.sleep(STORM_LEAD_S)
        loaded = replace(run_workload(driver, execs, alert_s, cgroup), workload="storm")
        background.join()
        agent.settle()
    finally:
        result = agent.stop()
        remove_cgroup(cgroup)
    assert agent.write_times is not None
    latency = latencies_by_window(agent.write_times.lines(), [quiet, loaded],
                                  keep=from_sandbox_or_not_alert(cgroup.name))
    agent.output.unlink()
    rows = [row("none", quiet, latency["quiet"]),
            row("connect storm flat out", loaded, latency["storm"], storms[0] if storms else None)]
    for r in rows:
        a = r["alert_latency"]
        print(f"alert latency ({r['load']}): {r['alerts']} alerts of {r['execs']} execs, "
              f"p50 {a.get('p50_ms', float('nan')):.1f} ms, p99 {a.get('p99_ms', float('nan')):.1f} ms", flush=True)
    print(f"idle CPU {idle_cpu:.2%} over {idle_s:g} s ({idle_wakeups:.1f} wakeups a second); lost {result.lost}",
          flush=True)
    return {"idle_s": idle_s, "idle_cpu_fraction": idle_cpu, "idle_wakeups_per_s": idle_wakeups,
            "lost": result.lost, "rows": rows}
