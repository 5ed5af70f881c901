"""ebpfguard's footprint: `python -m bench.soak [--events N]` as root (also `bench.run`'s soak phase).

Starts `ebpfguard run` with the default configuration (every probe family and detector on)
but the in-kernel rate limit off, so that a million events pass in a minute or two rather
than the 1,000 a second one cgroup may send; measures its CPU over an idle stretch, then
drives connect and exec storms (bench/drivers) in turn until the agent has written a million
events (its metrics say), and prints its memory at `ready`, the highest seen after `ready`,
and once it has worked through the million: RSS with its anonymous and file parts, PSS, the
BPF ring buffers' share, and VmHWM (the start-up compile included).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.procinfo import Memory, footprint, memory
from bench.tracers import NO_RATE_LIMIT, REPO, Ebpfguard
from bench.workloads import WORKLOADS, build_driver, run_workload

SOAK_EVENTS = 1_000_000
SOAK_CHUNK_S = 5.0
MAX_CHUNKS = 120  # ten minutes: an agent that sees too little of the storms still stops
READY_SETTLE_S = 1.0


def run_soak(driver: Path, idle_s: float, events: int, raw: Path) -> dict:
    """ebpfguard's CPU while the host is idle, then its memory through and after `events` events."""
    agent = Ebpfguard(output="/dev/null", config=NO_RATE_LIMIT)
    agent.start(raw)
    time.sleep(READY_SETTLE_S)
    ready = memory(agent.proc.pid)
    before = footprint(agent.proc.pid)
    time.sleep(idle_s)
    idle_cpu = (footprint(agent.proc.pid).cpu_s - before.cpu_s) / idle_s
    storms = [w for w in WORKLOADS if w.name in ("connect", "exec")]
    chunks = 0
    highest = ready
    trajectory = []  # (events written, RSS MiB, RssAnon MiB) after each storm: flat, or growing?
    written = agent.events_written()
    while chunks < MAX_CHUNKS and written < events:
        run_workload(driver, storms[chunks % len(storms)], SOAK_CHUNK_S)
        chunks += 1
        now = memory(agent.proc.pid)
        written = agent.events_written()
        trajectory.append((written, round(now.rss_kib / 1024, 1), round(now.anon_kib / 1024, 1)))
        highest = now if now.rss_kib > highest.rss_kib else highest
    agent.settle()  # until it has worked through the backlog
    after = memory(agent.proc.pid)
    highest = after if after.rss_kib > highest.rss_kib else highest
    result = agent.stop()
    soak = {"idle_s": idle_s, "idle_cpu_fraction": idle_cpu, "events": result.events, "lost": result.lost,
            "cpu_s": result.cpu_s, "memory": {"ready": ready.as_mib(), "highest": highest.as_mib(),
                                              "after": after.as_mib()},
            "trajectory": trajectory,
            # the keys of earlier runs (bench/report.py reads both)
            "rss_kib_start": ready.rss_kib, "anon_rss_kib_start": ready.anon_kib,
            "rss_kib_after": after.rss_kib, "anon_rss_kib_after": after.anon_kib,
            "peak_rss_kib": result.peak_rss_kib}
    print(summary(soak, ready, highest, after), flush=True)
    return soak


def summary(soak: dict, ready: Memory, highest: Memory, after: Memory) -> str:
    """The soak's figures as a few lines of text."""
    def row(name: str, m: Memory) -> str:
        return (f"  {name:<8} RSS {m.rss_kib / 1024:6.1f}  anon {m.anon_kib / 1024:5.1f}  file {m.file_kib / 1024:5.1f}"
                f"  (rings {m.ring_kib / 1024:4.1f})  PSS {m.pss_kib / 1024:6.1f}")
    return "\n".join([f"soak: idle CPU {soak['idle_cpu_fraction']:.2%}; {soak['events']:,} events, lost {soak['lost']}; "
                      f"MiB (VmHWM, start-up compile included: {after.peak_rss_kib / 1024:.1f}):",
                      row("ready", ready), row("highest", highest), row("after", after),
                      "  after each storm (events, RSS, anon): "
                      + ", ".join(f"{n // 1000}k {rss:.0f} {anon:.0f}" for n, rss, anon in soak.get("trajectory", []))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=SOAK_EVENTS)
    parser.add_argument("--idle-s", type=float, default=10.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: the agent loads eBPF programs")
    results = REPO / "bench" / "results"
    raw = results / "raw" / time.strftime("soak-%Y%m%dT%H%M%S")
    raw.mkdir(parents=True, exist_ok=True)
    soak = run_soak(build_driver(results), args.idle_s, args.events, raw)
    (raw / "soak.json").write_text(json.dumps(soak, indent=1))


if __name__ == "__main__":
    main()
