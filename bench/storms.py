"""Storms: the highest rate at which ebpfguard keeps up, and bpftrace on the same storm flat out.

For each storm (connect, refused connect, exec), ebpfguard first takes it flat out. A step keeps
up when nothing is lost and event p99 (syscall to line written) is under KEEPS_UP_P99_MS; if
flat out does, that is the sustained rate. If not, paced steps bisect the rates below the
flat-out one: the sustained rate is the highest step that kept up. Every step gets a fresh
agent (the per-cgroup rate limit off: every record reaches userspace), and its backlog is
drained before it stops, so nothing carries over and a backlog shows as latency, not as a loss
at shutdown. Then bpftrace (peers/ebpfguard.bt, a line per event)
takes the same storm flat out: its events/s and what it lost.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Optional

from bench.latency import latencies_by_window, latency_summary
from bench.tracers import NO_RATE_LIMIT, SHIPPED, Bpftrace, Ebpfguard
from bench.workloads import WORKLOADS, Run, Workload, run_workload

STORMS = ("connect", "refused", "exec")
KEEPS_UP_P99_MS = 100.0


def keeps_up(step: dict) -> bool:
    """Nothing lost and event p99 under KEEPS_UP_P99_MS (a step with no event kept nothing up)."""
    return step["lost"] == 0 and step["latency"].get("p99_ms", float("inf")) < KEEPS_UP_P99_MS


def round_rate(rate: float) -> int:
    """A paced rate to two significant figures (12,359 -> 12,000), at least 1."""
    return max(1, int(float(f"{rate:.2g}")))


def bisect_rates(flat_out_ops_per_s: float, passed: Iterable[tuple[int, bool]]) -> Optional[int]:
    """The next paced rate to try below the flat-out one, given the paced steps so far
    (rate, kept up): halfway between the highest that kept up (or nothing) and the lowest that
    did not (or flat out). None once the bracket is too narrow to tell apart."""
    low, high = 0.0, float(flat_out_ops_per_s)
    for rate, ok in passed:
        if ok:
            low = max(low, rate)
        else:
            high = min(high, rate)
    rate = round_rate((low + high) / 2)
    return rate if low < rate < high else None


def events_in_window(lines: Iterable[str], start_ns: int, end_ns: int) -> int:
    """bpftrace's event lines (they start with the event's `nsecs`, CLOCK_MONOTONIC) whose time
    falls in [start_ns, end_ns] of that clock; other lines (argv, 'Lost N events') are not."""
    count = 0
    for line in lines:
        stamp = line.split(" ", 1)[0]
        if stamp.isdigit() and start_ns <= int(stamp) <= end_ns:
            count += 1
    return count


def run_step(driver: Path, base: Workload, rate: int, seconds: float, workdir: Path, shipped: bool = False) -> dict:
    """ebpfguard through one storm at `rate` ops/s (0: flat out); its backlog drained before it
    stops. The rate limit off, or `shipped`: the agent's default config."""
    workdir.mkdir(parents=True, exist_ok=True)
    agent = Ebpfguard(config=None if shipped else NO_RATE_LIMIT, name=SHIPPED if shipped else Ebpfguard.name)
    agent.start(workdir)
    try:
        run = run_workload(driver, Workload(base.name, base.driver, base.unit, rate, base.extra), seconds)
        agent.settle()
    finally:
        result = agent.stop()
    assert agent.write_times is not None
    latency = latencies_by_window(agent.write_times.lines(), [run])[base.name]
    agent.output.unlink()  # large, and parsed already
    step = {"workload": base.name, "target_rate": rate, "ops_per_s": run.ops_per_s,
            "events_per_s": len(latency["event"]) / run.seconds, "lost": result.lost,
            "held_back": result.detail.get("held_back", 0), "shipped": shipped,
            "latency": latency_summary(latency["event"]), "alert_latency": latency_summary(latency["alert"])}
    step["keeps_up"] = keeps_up(step)
    print(f"storm {base.name}{' (as shipped)' if shipped else ''} rate {rate or 'max'}: {run.ops_per_s:,.0f} ops/s, {step['events_per_s']:,.0f} events/s, "
          f"lost {result.lost}, event p99 {step['latency'].get('p99_ms', float('nan')):.1f} ms", flush=True)
    return step


def run_bpftrace(driver: Path, base: Workload, seconds: float, workdir: Path) -> dict:
    """bpftrace through one storm flat out: ops/s, its event lines per second, what it lost."""
    workdir.mkdir(parents=True, exist_ok=True)
    tracer = Bpftrace()
    tracer.start(workdir)
    try:
        run: Run = run_workload(driver, base, seconds)
        tracer.settle()
    finally:
        result = tracer.stop()
    wall_minus_monotonic = time.time_ns() - time.monotonic_ns()
    with open(tracer.output, errors="replace") as lines:
        events = events_in_window(lines, run.start_ns - wall_minus_monotonic, run.end_ns - wall_minus_monotonic)
    tracer.output.unlink()
    row = {"workload": base.name, "ops_per_s": run.ops_per_s, "events_per_s": events / run.seconds,
           "lost": result.lost, "cpu_s": result.cpu_s}
    print(f"storm {base.name} bpftrace: {run.ops_per_s:,.0f} ops/s, {row['events_per_s']:,.0f} events/s, "
          f"lost {result.lost}", flush=True)
    return row


def run_storms(driver: Path, seconds: float, bisect_steps: int, raw: Path, with_peers: bool = True) -> dict:
    """Every storm through ebpfguard (flat out, then bisected paced steps while it falls behind)
    and as shipped (its default config, flat out), and, with peers, bpftrace flat out:
    {"steps": [...], "shipped": [...], "bpftrace": [...]}."""
    steps: list[dict] = []
    shipped: list[dict] = []  # each storm flat out through the agent as shipped
    peers: list[dict] = []
    for name in STORMS:
        base = next(w for w in WORKLOADS if w.name == name)
        flat_out = run_step(driver, base, 0, seconds, raw / "storms" / f"{name}-max")
        steps.append(flat_out)
        paced: list[tuple[int, bool]] = []
        while not flat_out["keeps_up"] and len(paced) < bisect_steps:
            rate = bisect_rates(flat_out["ops_per_s"], paced)
            if rate is None:
                break
            step = run_step(driver, base, rate, seconds, raw / "storms" / f"{name}-{rate}")
            steps.append(step)
            paced.append((rate, step["keeps_up"]))
        shipped.append(run_step(driver, base, 0, seconds, raw / "storms" / f"{name}-shipped", shipped=True))
        if with_peers:
            peers.append(run_bpftrace(driver, base, seconds, raw / "storms" / f"{name}-bpftrace"))
    return {"steps": steps, "shipped": shipped, "bpftrace": peers}
