"""Event latency with every alert output's receiver down, against no outputs, in the same run.

    sudo .venv/bin/python -m bench.outputs_down [--rounds 3] [--execs 1500] [--alert-every 1]

Each round starts the agent three ways, in rotated order: no outputs; all four outputs on
(Alertmanager, Falco, webhook with disk spools, syslog over TCP) against closed loopback ports
(connection refused: the receivers are down); and against a listener that accepts and never
answers (every attempt waits out its timeout). A sandboxed storm of miner-like execs (each one
an alert) runs under each. The figure is the agent's own pipeline latency histogram (kernel
timestamp to event written, every event), read from its /metrics after the storm: mean and
p99 (upper bucket bound), and their ratio to no outputs in the same round. The outputs' own
counters show the receivers were down (failed attempts, spooled backlog, drops).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from ebpfguard.enrich.sandbox import cgroup_root_from_proc

WALLET = "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connections are refused


def outputs_config(workdir: Path, port: int) -> dict:
    url = f"http://127.0.0.1:{port}"
    common = {"spool_dir": str(workdir / "spool"), "timeout_s": 2.0}
    return {"outputs": {
        "alertmanager": {"url": url, **common},
        "falco": {"url": url, **common},
        "webhook": {"url": url, **common},
        "syslog": {"address": f"tcp://127.0.0.1:{port}", "timeout_s": 2.0},
    }}


def histogram(metrics: str, name: str) -> tuple[list[tuple[float, float]], float, float]:
    buckets = [(float("inf") if m[0] == "+Inf" else float(m[0]), float(m[1]))
               for m in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', metrics, re.MULTILINE)]
    total = float(re.search(rf"^{name}_sum (\S+)$", metrics, re.MULTILINE).group(1))
    count = float(re.search(rf"^{name}_count (\S+)$", metrics, re.MULTILINE).group(1))
    return buckets, total, count


def quantile_bound(buckets: list[tuple[float, float]], count: float, q: float) -> float:
    """Upper bound of the bucket holding the q-quantile (Prometheus' buckets are cumulative)."""
    for bound, cumulative in buckets:
        if cumulative >= q * count:
            return bound
    return float("inf")


def output_counters(metrics: str) -> dict:
    found = {}
    for name in ("sent", "failed", "queue_depth"):
        for output, value in re.findall(rf'^ebpfguard_output_{name}(?:_total)?{{output="(\w+)"}} (\S+)$', metrics, re.M):
            found.setdefault(output, {})[name] = float(value)
    for output, reason, value in re.findall(r'^ebpfguard_output_dropped_total{output="(\w+)",reason="(\w+)"} (\S+)$',
                                            metrics, re.M):
        if float(value):
            found.setdefault(output, {})[f"dropped_{reason}"] = float(value)
    return found


def run_once(config: str, execs: int, workdir: Path, cgroup_root: Path, alert_every: int = 1) -> dict:
    workdir.mkdir(parents=True)
    args = [sys.executable, "-X", "faulthandler", "-m", "ebpfguard", "run", "--output", str(workdir / "events.jsonl"),
            "--socket", "none", "--metrics-addr", "127.0.0.1:0"]
    silent = None
    if config != "none":
        if config == "silent":
            silent = socket.socket()
            silent.bind(("127.0.0.1", 0))
            silent.listen(4096)  # accepts (the kernel does), never reads nor answers
            port = silent.getsockname()[1]
        else:
            port = closed_port()
        path = workdir / "config.yaml"
        path.write_text(json.dumps(outputs_config(workdir, port)))
        args += ["--config", str(path)]
    stderr = open(workdir / "agent.stderr", "w+")
    agent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 180
        while "ready" not in (workdir / "agent.stderr").read_text().splitlines():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"agent did not start:\n{(workdir / 'agent.stderr').read_text()[-3000:]}")
            time.sleep(0.1)
        url = re.search(r"metrics on (\S+)", (workdir / "agent.stderr").read_text()).group(1)
        miner, worker = workdir / "xmrig", workdir / "worker"
        shutil.copy("/bin/true", miner)
        shutil.copy("/bin/true", worker)
        cgroup = cgroup_root / f"sandbox-bench-{uuid.uuid4().hex[:8]}"
        cgroup.mkdir()
        try:
            # One exec in `alert_every` is miner-like (an alert); the others are plain.
            script = f'i=0; while [ $i -lt {execs} ]; do if [ $((i % {alert_every})) -eq 0 ]; then ' \
                     f'{miner} -o stratum+tcp://pool.example.net:3333 -u {WALLET} -p $i --donate-level 1; ' \
                     f'else {worker} --epoch $i; fi; i=$((i+1)); done'
            started = time.monotonic()
            subprocess.run(["sh", "-c", script], check=True,
                           preexec_fn=lambda: (cgroup / "cgroup.procs").write_text("0"))
            storm_s = time.monotonic() - started
            time.sleep(1.0)  # the last events drained and written
            with urllib.request.urlopen(url, timeout=10) as response:
                metrics = response.read().decode()
        finally:
            cgroup.rmdir()
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agent.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack
            agent.wait()
            raise SystemExit(f"agent did not stop:\n{(workdir / 'agent.stderr').read_text()[-6000:]}")
        stderr.close()
        if silent is not None:
            silent.close()
    buckets, total, count = histogram(metrics, "ebpfguard_pipeline_latency_seconds")
    alerts = sum(float(v) for v in re.findall(r'^ebpfguard_alerts_total{[^}]*} (\S+)$', metrics, re.M))
    return {"config": config, "events": count, "alerts": alerts, "storm_s": storm_s,
            "mean_ms": 1e3 * total / count if count else float("nan"),
            "p99_ms_bound": 1e3 * quantile_bound(buckets, count, 0.99), "outputs": output_counters(metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--execs", type=int, default=1500)
    parser.add_argument("--configs", default="none,refused,silent", help="which of none,refused,silent to run")
    parser.add_argument("--alert-every", type=int, default=1,
                        help="one exec in N is miner-like (1: every exec is an alert, a flood)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the agent loads BPF programs)")
    cgroup_root = Path(cgroup_root_from_proc() or "/sys/fs/cgroup")
    configs = options.configs.split(",")
    results: list[dict] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ebpfguard-outputs-bench-") as tmp:
        for round_no in range(options.rounds):
            order = configs[round_no % len(configs):] + configs[:round_no % len(configs)]
            for config in order:
                result = run_once(config, options.execs, Path(tmp) / f"r{round_no}-{config}", cgroup_root,
                                  options.alert_every)
                result["round"] = round_no
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(f"# Event latency with the alert receivers down ({options.rounds} rounds, {options.execs} "
          f"execs each, one in {options.alert_every} miner-like; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after)\n")
    print("| outputs | mean latency ms (median of rounds) | ratio to none (median, min-max) | p99 bucket bound ms | events | alerts |")
    print("| --- | --- | --- | --- | --- | --- |")
    baseline = {r["round"]: r for r in results if r["config"] == "none"}
    for config in configs:
        rows = [r for r in results if r["config"] == config]
        ratios = [r["mean_ms"] / baseline[r["round"]]["mean_ms"] for r in rows]
        print(f"| {config} | {statistics.median(r['mean_ms'] for r in rows):.2f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{statistics.median(r['p99_ms_bound'] for r in rows):g} | "
              f"{statistics.median(r['events'] for r in rows):.0f} | {statistics.median(r['alerts'] for r in rows):.0f} |")
    print("\nOutputs' counters in the last round:")
    for r in results[-len(configs):]:
        if r["outputs"]:
            print(f"- {r['config']}: {json.dumps(r['outputs'], sort_keys=True)}")


if __name__ == "__main__":
    main()
