"""Run the benchmark: `python -m bench.run [--quick]` as root (`make bench` sets up first).

Phases, in order:
  rounds   every configuration (bench/tracers.py) runs every workload (bench/workloads.py),
           configurations alternating within each round, the order rotated between rounds;
  storms   per storm (connect, refused connect, exec) the highest rate ebpfguard keeps up with
           (nothing lost, event p99 under 100 ms): flat out, then paced steps bisecting below it;
           bpftrace on the same storm flat out (bench/storms.py);
  alerts   ebpfguard's idle CPU, then alert latency of miner execs from a sandbox at 20/s, alone
           and during a flat-out connect storm (bench/alert_latency.py);
  soak     ebpfguard idle (its CPU), then storms until a million events (its memory:
           bench/soak.py, also runnable alone);
  profile  ebpfguard under cProfile through a connect and an exec storm: where its time goes;
  pipeline the userspace pipeline alone fed recorded raw records (bench/pipeline_cpu.py): CPU s
           per 100k events, free of the kernel and of the load generator.
Writes bench/results/results.json and results.md (the latest run), raw files beside them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import shutil
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from bench import pipeline_cpu
from bench.alert_latency import run_alert_latency
from bench.latency import latencies_by_window
from bench.report import aggregate, render_markdown
from bench.soak import SOAK_EVENTS, run_soak
from bench.storms import run_storms
from bench.tracers import NO_RATE_LIMIT, REPO, Ebpfguard, Tracer, TracerResult, all_tracers
from bench.workloads import WORKLOADS, Run, build_driver, run_workload

RESULTS = REPO / "bench" / "results"
SETTLE_S = 1.0  # between configurations: let the last one's teardown finish
BISECT_STEPS = 3  # paced steps below flat out while ebpfguard falls behind: the rate to an eighth
PHASES = ("rounds", "storms", "alerts", "soak", "profile", "pipeline")


def machine() -> dict:
    """What the figures were taken on, and how busy it was."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem_kib = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal")))
    return {"kernel": os.uname().release, "cpus": os.cpu_count(), "cpu_model": cpu,
            "memory_gib": round(mem_kib / 2**20, 1), "loadavg": open("/proc/loadavg").read().split()[:3],
            "bpf_programs_loaded": bpf_program_count(),
            "bpftrace": subprocess.run(["bpftrace", "--version"], capture_output=True, text=True).stdout.strip(),
            "auditd": subprocess.run(["auditctl", "-v"], capture_output=True, text=True).stdout.strip()}


def bpf_program_count() -> Optional[int]:
    """Programs loaded by anyone (other agents on a shared host tax syscalls too)."""
    if not shutil.which("bpftool"):
        return None
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
    return len(json.loads(out or "[]"))


def through_workloads(tracer: Tracer, driver: Path, seconds: float, workdir: Path) -> tuple[list[Run], dict, TracerResult]:
    """Start `tracer`, run every workload once (each after the tracer settled), stop it:
    the runs, the seconds each settle took, and the tracer's result."""
    workdir.mkdir(parents=True, exist_ok=True)
    tracer.start(workdir)
    runs, settled = [], {}
    try:
        for w in WORKLOADS:
            settled[w.name] = tracer.settle()
            runs.append(run_workload(driver, w, seconds))
    finally:
        result = tracer.stop()  # never leave a tracer attached (auditd above all)
    return runs, settled, result


def run_rounds(driver: Path, tracers: list[Tracer], rounds: int, seconds: float, raw: Path) -> list[dict]:
    """Every tracer through every workload, `rounds` times; a record per (round, tracer)."""
    records = []
    for r in range(rounds):
        order = tracers[r % len(tracers):] + tracers[:r % len(tracers)]
        for tracer in order:
            runs, settled, result = through_workloads(tracer, driver, seconds, raw / f"round-{r}")
            records.append({"round": r, "config": tracer.name, "runs": [asdict(x) for x in runs],
                            "settle_s": settled, "tracer": asdict(result)})
            if isinstance(tracer, Ebpfguard):
                tracer.output.unlink()  # large, and counted already
            print(f"round {r} {tracer.name:<13} " + "  ".join(f"{x.workload} {x.ops_per_s:,.0f}/s" for x in runs)
                  + f"  lost {result.lost}", flush=True)
            time.sleep(SETTLE_S)
    return records


def run_latency_round(driver: Path, seconds: float, raw: Path) -> dict:
    """One more round of every workload for the rate-limit-off agent alone, with its output
    file watched (bench/tail.py): each event's time from syscall to line written. Apart from
    the rounds, whose cost figures the watcher's wakeups (one per write of the agent's) would
    carry: +9 to +12 us per exec in same-run A/Bs (docs/performance.md)."""
    agent = Ebpfguard(config=NO_RATE_LIMIT)
    runs, _settled, result = through_workloads(agent, driver, seconds, raw / "latency-round")
    assert agent.write_times is not None
    record = {"config": agent.name, "runs": [asdict(x) for x in runs], "tracer": asdict(result),
              "latency_ns": latencies_by_window(agent.write_times.lines(), runs)}
    agent.output.unlink()
    print(f"latency round: {result.events:,} events, lost {result.lost}", flush=True)
    return record


# cProfile's names of the calls a thread waits in (its timer is the wall clock).
WAITS = frozenset({"<built-in method time.sleep>", "<method 'acquire' of '_thread.lock' objects>",
                   "<method 'poll' of 'select.epoll' objects>"})


def run_profile(driver: Path, seconds: float, raw: Path) -> dict:
    """ebpfguard under cProfile through a connect and an exec storm: its top functions. The
    rate limit is off, so the connect storm's records reach the pipeline being profiled."""
    profile = raw / "ebpfguard.prof"
    agent = Ebpfguard(profile=profile, config=NO_RATE_LIMIT)
    agent.start(raw)
    for w in WORKLOADS:
        if w.name in ("connect", "exec"):
            run_workload(driver, w, seconds)
    result = agent.stop()
    agent.output.unlink()
    text = io.StringIO()
    stats = pstats.Stats(str(profile), stream=text)
    stats.sort_stats("tottime").print_stats(15)
    rows = stats.stats.items()  # type: ignore[attr-defined]
    total = sum(row[2] for key, row in rows if key[2] not in WAITS)
    # bcc's own functions are start-up and teardown (compile, attach, detach), except the
    # ring-buffer poll whose own time is the C side and the ctypes callbacks into Python.
    # Waiting is not work: the drain's epoll and sleep, and joins at shutdown.
    pipeline = [(key, row) for key, row in rows
                if ("/bcc/" not in key[0] or key[2].startswith("ring_buffer")) and key[2] not in WAITS]
    top = sorted(pipeline, key=lambda kv: kv[1][2], reverse=True)[:15]
    return {"events": result.events, "lost": result.lost, "profiled_s": total, "text": text.getvalue(),
            "top": [{"function": f"{Path(f).name}:{line}({name})", "tottime_s": row[2], "share": row[2] / total,
                     "calls": row[1]} for (f, line, name), row in top]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s runs, short storms, alerts and soak: for debugging")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each workload run")
    parser.add_argument("--no-peers", action="store_true", help="skip bpftrace and auditd")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset to run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    phases = set(args.phases.split(","))
    if phases - set(PHASES):
        parser.error(f"unknown phases {sorted(phases - set(PHASES))}; known: {','.join(PHASES)}")
    if os.geteuid() != 0 and phases - {"pipeline"}:
        parser.error("run as root: the tracers load eBPF programs and audit rules")

    raw = RESULTS / "raw" / time.strftime("%Y%m%dT%H%M%S")
    raw.mkdir(parents=True, exist_ok=True)
    driver = build_driver(RESULTS)
    results: dict = {"machine": machine(), "settings": {"rounds": args.rounds, "seconds": args.seconds,
                                                        "quick": args.quick, "phases": sorted(phases)},
                     "workloads": [asdict(w) for w in WORKLOADS]}
    started = time.monotonic()
    if "rounds" in phases:
        results["rounds"] = run_rounds(driver, all_tracers(not args.no_peers), args.rounds, args.seconds, raw)
        results["latency_round"] = run_latency_round(driver, args.seconds, raw)
    if "storms" in phases:
        results["storms"] = run_storms(driver, args.seconds * (1 if args.quick else 2),
                                       1 if args.quick else BISECT_STEPS, raw, with_peers=not args.no_peers)
    if "alerts" in phases:
        results["alert_latency"] = (run_alert_latency(driver, raw, alert_s=3.0, idle_s=3.0) if args.quick
                                    else run_alert_latency(driver, raw))
    if "soak" in phases:
        results["soak"] = run_soak(driver, 3.0 if args.quick else 10.0, SOAK_EVENTS // (20 if args.quick else 1), raw)
    if "profile" in phases:
        results["profile"] = run_profile(driver, args.seconds, raw)
    if "pipeline" in phases:
        n = 20_000 if args.quick else 100_000
        results["pipeline"] = [{k: v for k, v in pipeline_cpu.measure(storm, n).items() if k != "dropped"}
                               for storm in pipeline_cpu.STORMS]
    results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["machine"]["minutes"] = round((time.monotonic() - started) / 60, 1)

    figures = aggregate(results)  # also drops the raw latency lists, too large to keep
    results["figures"] = figures
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
    markdown = render_markdown(results, figures)
    (RESULTS / "results.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
