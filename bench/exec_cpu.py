"""The agent's CPU per exec in a real exec storm, per thread: `python -m bench.exec_cpu TREE...`.

    sudo .venv/bin/python -m bench.exec_cpu [--rounds N] [--seconds S] TREE [TREE...]

Each round runs the exec storm of drivers/storm.c (fork + execve of /bin/true, one exec in ten
a miner's command line) with no agent, then with `ebpfguard run` from each TREE (a checkout:
`git archive COMMIT | tar -x -C DIR`) in an order rotated between rounds. For each agent it
prints the storm's execs/s and the CPU each of the agent's threads spent per exec (user +
system, and user alone, from /proc/PID/task/*/stat), then per tree the median and the lowest
total of the rounds. The agent sees every exec on the host, so other load adds to its figure:
on a shared machine the lowest round is the least disturbed. Needs root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.tree_overhead import TreeAgent
from bench.workloads import WORKLOADS, build_driver, run_workload

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SETTLE_S = 1.0  # after the storm: the agent drains and detects what it made


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """thread id -> (user + system, user) CPU seconds so far."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        user, system = int(fields[11]) / TICKS_PER_S, int(fields[12]) / TICKS_PER_S
        out[int(tid)] = (user + system, user)
    return out


def per_exec_us(before: dict, after: dict, execs: int, main_tid: int) -> dict[str, tuple[float, float]]:
    """Each thread's CPU during the storm per exec (µs), the main thread named `main`."""
    out = {}
    for tid, (total, user) in after.items():
        total0, user0 = before.get(tid, (0.0, 0.0))
        if total > total0:
            name = "main" if tid == main_tid else str(tid)
            out[name] = (round((total - total0) / execs * 1e6, 1), round((user - user0) / execs * 1e6, 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    storm = next(w for w in WORKLOADS if w.name == "exec")
    with tempfile.TemporaryDirectory() as tmp:
        driver = build_driver(Path(tmp))
        totals: dict[Path, list[float]] = {tree: [] for tree in args.trees}
        for round_no in range(args.rounds):
            alone = run_workload(driver, storm, args.seconds)
            print(f"round {round_no}: no agent {alone.ops_per_s:.0f} execs/s", flush=True)
            shift = round_no % len(args.trees)
            for tree in args.trees[shift:] + args.trees[:shift]:
                with tempfile.TemporaryDirectory() as workdir:
                    agent = TreeAgent(tree.resolve(), Path(workdir), None, None)
                    before = thread_cpu(agent.proc.pid)
                    run = run_workload(driver, storm, args.seconds)
                    time.sleep(SETTLE_S)
                    threads = per_exec_us(before, thread_cpu(agent.proc.pid), run.ops, agent.proc.pid)
                    agent.stop()
                total = sum(cpu for cpu, _ in threads.values())
                totals[tree].append(total)
                print(f"  {tree}: {run.ops_per_s:.0f} execs/s, agent {total:.0f} us per exec; "
                      f"per thread (all, user): {threads}", flush=True)
    for tree, values in totals.items():
        print(f"{tree}: agent CPU per exec median {statistics.median(values):.0f} us, lowest {min(values):.0f} us")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
