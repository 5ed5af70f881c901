"""What issue 16's userspace hardening costs per exec: `python -m bench.hardening BASELINE_SRC`.

Runs the same exec workload (a shell starting `/bin/true` N times, and N runs of
`./kworker -c config.json`, the shape whose config the agent now reads through openat2 on a
worker thread) with no agent, with the agent from BASELINE_SRC (a source tree without these
changes, e.g. `git archive <commit> | tar -x -C /tmp/base`), and with this tree's agent,
interleaved round by round so a noisy host hits all three alike. Prints per-exec wall time
(median of rounds) and the agent's CPU time per exec, and the ratio of the added costs.
Needs root (the agents load their probes).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXECS = int(os.environ.get("BENCH_EXECS", "500"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
HERE = Path(__file__).resolve().parent.parent


def start_agent(src: Path, workdir: Path) -> subprocess.Popen:
    stderr = open(workdir / "agent.stderr", "w")
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen([sys.executable, "-m", "ebpfguard", "run", "--output", str(workdir / "events.jsonl"),
                             "--socket", "none", "--control-socket", "none", "--metrics-addr", "none"],
                            stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=src)
    deadline = time.monotonic() + 180
    while "ready" not in (workdir / "agent.stderr").read_text().splitlines():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"agent from {src} did not start:\n{(workdir / 'agent.stderr').read_text()[-2000:]}")
        time.sleep(0.2)
    return proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workload(workdir: Path) -> float:
    """Seconds per exec over both shapes."""
    started = time.perf_counter()
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {EXECS} ]; do /bin/true; i=$((i+1)); done"], check=True)
    subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {EXECS} ]; do ./kworker -c config.json; i=$((i+1)); done"],
                   check=True, cwd=workdir)
    return (time.perf_counter() - started) / (2 * EXECS)


def main() -> None:
    baseline_src = Path(sys.argv[1]).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "kworker").write_text("#!/bin/sh\nexit 0\n")
        (work / "kworker").chmod(0o755)
        (work / "config.json").write_text('{"pools": [{"url": "stratum+tcp://pool.example.org:3333"}]}')
        results: dict[str, list[tuple[float, float]]] = {"none": [], "baseline": [], "hardened": []}
        for _ in range(ROUNDS):
            results["none"].append((workload(work), 0.0))
            for name, src in (("baseline", baseline_src), ("hardened", HERE)):
                agent_dir = work / name
                agent_dir.mkdir(exist_ok=True)
                agent = start_agent(src, agent_dir)
                before = cpu_seconds(agent.pid)
                per_exec = workload(work)
                time.sleep(0.5)  # let the agent drain and detect what the workload made
                results[name].append((per_exec, (cpu_seconds(agent.pid) - before) / (2 * EXECS)))
                agent.send_signal(signal.SIGTERM)
                agent.wait(timeout=60)
    load = os.getloadavg()[0]
    none_us = statistics.median(r[0] for r in results["none"]) * 1e6
    print(f"{ROUNDS} rounds of {2 * EXECS} execs; load average at the end {load:.1f} (shared host: noisy)")
    print(f"no agent: {none_us:.0f} us per exec")
    added = {}
    for name in ("baseline", "hardened"):
        wall_us = statistics.median(r[0] for r in results[name]) * 1e6
        cpu_us = statistics.median(r[1] for r in results[name]) * 1e6
        added[name] = wall_us - none_us
        print(f"{name}: {wall_us:.0f} us per exec (+{wall_us - none_us:.0f}), agent CPU {cpu_us:.0f} us per exec")
    if added["baseline"] > 0:
        print(f"added cost, hardened / baseline: {added['hardened'] / added['baseline']:.2f}")


if __name__ == "__main__":
    main()
