"""Exec and connect overhead of two source trees of ebpfguard, in the same run (issue 16).

    python -m bench.tree_overhead BEFORE_TREE AFTER_TREE [--rounds N] [--seconds S]
                                  [--after-config FILE] [--connect] [--floor]

Each round runs the exec storm and the closed-port connect storm of drivers/storm.c (with
--connect also the loopback connect+accept+close storm) with no agent, with `ebpfguard run`
from BEFORE_TREE, and from AFTER_TREE (optionally with a config: e.g. the rate limit off, to
see the kernel side's cost without the limit's savings), and with --floor AFTER_TREE's
empty-hooks floor (`python -m bench.floor empty`: the same hooks, empty bodies), in an order
rotated between rounds. Figures per workload, medians over rounds, AFTER as a ratio of BEFORE
(and of the floor):

* added ns/op: a configuration's wall-clock ns/op minus no agent's in the same round. On a
  small shared host this is mostly the agent's userspace competing for the CPUs: noisy.
* agent CPU ns/op: the agent process's own CPU time (userspace and the syscalls it makes)
  during the workload, per op; it also includes what the rest of the host made it do.
* BPF ns/op: for each of the agent's BPF programs that ran at least once per op of the
  workload, its mean run time per run (BPF_ENABLE_STATS counters, via bpftool), summed: the
  probes' own cost per op, which neither the host's noise nor its other processes' events
  move much (other processes' runs are averaged in, not added).
* BPF ns per op (`bpf_op_ns_*`): the same, each program's mean weighted by how many times it
  ran per op, rounded (a connect+accept+close passes five packets each way through the
  cgroup_skb hooks): the figure to hold against the floor's.
 A tree is a checkout (`git archive COMMIT | tar -x -C DIR`): its agent runs with
`python -m ebpfguard` from that directory. Needs root; prints one JSON document.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.procinfo import held_program_ids
from bench.workloads import WORKLOADS, build_driver, run_workload

READY_TIMEOUT_S = 180
WORKLOAD_NAMES = ("exec", "refused")
CONNECT_WORKLOAD = "connect"
SYS_BPF = 321  # x86-64
BPF_ENABLE_STATS = 32


def enable_bpf_stats() -> int:
    """Turn on the kernel's BPF run-time counters for as long as the returned fd is open."""
    attr = ctypes.create_string_buffer(128)  # union bpf_attr; enable_stats.type 0: run time
    fd = ctypes.CDLL(None, use_errno=True).syscall(SYS_BPF, BPF_ENABLE_STATS, attr, ctypes.sizeof(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "BPF_ENABLE_STATS")
    return fd


def probe_counters(pid: int) -> dict[str, tuple[int, int]]:
    """(run_time_ns, run_cnt) of each BPF program process `pid` holds, by where it runs: the
    tracepoint's name, or the cgroup program's own (bpftool)."""
    perf = json.loads(subprocess.run(["bpftool", "perf", "show", "--json"], capture_output=True,
                                     text=True, check=True).stdout or "[]")
    tracepoints = {e["prog_id"]: e["tracepoint"] for e in perf if e.get("pid") == pid and "tracepoint" in e}
    held = held_program_ids(pid)
    progs = json.loads(subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True,
                                      text=True, check=True).stdout)
    out: dict[str, tuple[int, int]] = {}
    for prog in progs:
        if prog["id"] in held:
            label = tracepoints.get(prog["id"]) or f"{prog['type']}:{prog.get('name', prog['id'])}"
            time_ns, count = out.get(label, (0, 0))
            out[label] = (time_ns + prog.get("run_time_ns", 0), count + prog.get("run_cnt", 0))
    return out


def per_op(before: dict, after: dict, ops: int) -> float:
    """BPF ns per op: each program that ran at least once per op, its mean ns per run times
    its runs per op, rounded (other processes' runs move the mean, not the count)."""
    total = 0.0
    for label, (time_ns, count) in after.items():
        t0, c0 = before.get(label, (0, 0))
        runs = count - c0
        if runs >= ops:
            total += (time_ns - t0) / runs * round(runs / ops)
    return total


def cpu_ns(pid: int) -> int:
    """User plus system CPU time of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def per_run(before: dict, after: dict, ops: int) -> dict[str, float]:
    """ns per run of each program that ran at least once per op of the workload (the other
    programs ran for the rest of the host)."""
    out = {}
    for label, (time_ns, count) in after.items():
        t0, c0 = before.get(label, (0, 0))
        if count - c0 >= ops:
            out[label] = (time_ns - t0) / (count - c0)
    return out


class TreeAgent:
    """`ebpfguard run` from a source tree, writing events to a file in `workdir`."""

    def __init__(self, tree: Path, workdir: Path, config: Optional[Path], rules: Optional[Path]) -> None:
        # An install maps bpf/ to the package ebpfguard.bpf; in a bare tree a link does, so
        # the tree's agent loads the tree's probes (not those of an editable install).
        probes = tree / "ebpfguard" / "bpf"
        if not probes.exists():
            probes.symlink_to(tree / "bpf", target_is_directory=True)
        args = [sys.executable, "-m", "ebpfguard", "run", "--output", str(workdir / "events.jsonl"),
                "--socket", "none", "--control-socket", "none", "--metrics-addr", "none"]
        if config is not None:
            args += ["--config", str(config)]
        if rules is not None:
            args += ["--rules", str(rules)]
        self.stderr = workdir / "agent.stderr"
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(args, cwd=tree, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ready" not in self.stderr.read_text().splitlines():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent from {tree} did not start: {self.stderr.read_text()[-2000:]}")
            time.sleep(0.2)
        time.sleep(1.0)  # let start-up work (the /proc walk) settle

    def stop(self) -> dict:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError(f"agent {self.stderr.parent.name} ignored SIGTERM for 60 s (killed)") from None
        for line in self.stderr.read_text().splitlines():
            if line.startswith("ebpfguard: stopped: "):
                return json.loads(line.removeprefix("ebpfguard: stopped: "))
        return {}


class TreeFloor:
    """`python -m bench.floor KIND` from a source tree: its hooks without its agent."""

    def __init__(self, tree: Path, workdir: Path, kind: str = "empty") -> None:
        probes = tree / "ebpfguard" / "bpf"
        if not probes.exists():
            probes.symlink_to(tree / "bpf", target_is_directory=True)
        self.stderr = workdir / "floor.stderr"
        with open(self.stderr, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.floor", kind], cwd=tree,
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ready" not in self.stderr.read_text().splitlines():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"floor from {tree} did not start: {self.stderr.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> dict:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        return {}


def _median_per_probe(rounds: list) -> dict[str, float]:
    labels = set().union(*rounds) if rounds else set()
    return {label: statistics.median([r[label] for r in rounds if label in r]) for label in sorted(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--after-config", type=Path)
    parser.add_argument("--rules", type=Path, help="a rules file both agents run with (--rules)")
    parser.add_argument("--connect", action="store_true", help="also the connect+accept+close storm")
    parser.add_argument("--floor", action="store_true", help="also AFTER's empty-hooks floor")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: the agents load BPF programs")
    names = WORKLOAD_NAMES + ((CONNECT_WORKLOAD,) if args.connect else ())
    workloads = [w for w in WORKLOADS if w.name in names and not w.idle_after_s]
    configs = [("none", None, None), ("before", args.before.resolve(), None),
               ("after", args.after.resolve(), args.after_config)]
    if args.floor:
        configs.append(("floor", args.after.resolve(), None))
    measured = [c for c, _, _ in configs[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        driver = build_driver(Path(tmp))
        ns: dict = {(c, w.name): [] for c, _, _ in configs for w in workloads}
        bpf_ns: dict = {(c, w.name): [] for c in measured for w in workloads}
        bpf_op_ns: dict = {(c, w.name): [] for c in measured for w in workloads}
        probes_ns: dict = {}
        agent_cpu: dict = {}
        agents: dict = {}
        stats_fd = enable_bpf_stats()
        for round_no in range(args.rounds):
            turn = round_no % len(configs)
            for name, tree, config in configs[turn:] + configs[:turn]:
                workdir = Path(tmp) / f"{name}-{round_no}"
                workdir.mkdir()
                if name == "floor":
                    agent = TreeFloor(tree, workdir)
                else:
                    agent = TreeAgent(tree, workdir, config, args.rules) if tree else None
                for workload in workloads:
                    counters = probe_counters(agent.proc.pid) if agent else {}
                    cpu_before = cpu_ns(agent.proc.pid) if agent else 0
                    run = run_workload(driver, workload, args.seconds)
                    ns[(name, workload.name)].append(run.ns_per_op)
                    if agent:
                        agent_cpu.setdefault((name, workload.name), []).append(
                            (cpu_ns(agent.proc.pid) - cpu_before) / run.ops)
                        counters_after = probe_counters(agent.proc.pid)
                        runs = per_run(counters, counters_after, run.ops)
                        bpf_ns[(name, workload.name)].append(sum(runs.values()))
                        bpf_op_ns[(name, workload.name)].append(per_op(counters, counters_after, run.ops))
                        probes_ns.setdefault((name, workload.name), []).append(runs)
                if agent:
                    agents[f"{name}-{round_no}"] = agent.stop()
        os.close(stats_fd)
    report: dict = {"rounds": args.rounds, "seconds": args.seconds, "loadavg": os.getloadavg(),
                    "ns_per_op": {f"{c}/{w}": v for (c, w), v in ns.items()}, "agents": agents}
    for workload in workloads:
        added = {c: [ns[(c, workload.name)][r] - ns[("none", workload.name)][r] for r in range(args.rounds)]
                 for c in measured}
        before, after = statistics.median(added["before"]), statistics.median(added["after"])
        bpf_before = statistics.median(bpf_ns[("before", workload.name)])
        bpf_after = statistics.median(bpf_ns[("after", workload.name)])
        report[workload.name] = {"added_ns_before": before, "added_ns_after": after,
                                 "after_over_before": after / before if before > 0 else None,
                                 "added_ns_per_round": added,
                                 "bpf_ns_before": bpf_before, "bpf_ns_after": bpf_after,
                                 "bpf_after_over_before": bpf_after / bpf_before if bpf_before > 0 else None,
                                 "bpf_ns_per_round": {c: bpf_ns[(c, workload.name)] for c in ("before", "after")},
                                 "agent_cpu_ns_before": statistics.median(agent_cpu[("before", workload.name)]),
                                 "agent_cpu_ns_after": statistics.median(agent_cpu[("after", workload.name)]),
                                 "agent_cpu_ns_per_round": {c: agent_cpu[(c, workload.name)] for c in ("before", "after")},
                                 "per_probe_median_ns": {c: _median_per_probe(probes_ns[(c, workload.name)])
                                                         for c in measured}}
        op = {c: statistics.median(bpf_op_ns[(c, workload.name)]) for c in measured}
        report[workload.name].update({f"bpf_op_ns_{c}": op[c] for c in measured})
        if args.floor:
            floor_added = statistics.median(added["floor"])
            report[workload.name].update({
                "added_ns_floor": floor_added,
                "added_after_over_floor": after / floor_added if floor_added > 0 else None,
                "added_before_over_floor": before / floor_added if floor_added > 0 else None,
                "bpf_op_after_over_floor": op["after"] / op["floor"] if op["floor"] > 0 else None,
                "bpf_op_before_over_floor": op["before"] / op["floor"] if op["floor"] > 0 else None,
            })
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
