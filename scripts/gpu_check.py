#!/usr/bin/env python3
"""GPU attribution check, for a machine with an NVIDIA GPU (issue 13's device check).

Starts a CUDA workload (PyTorch matrix products) inside a fresh sandbox cgroup, then uses
ebpfguard's NVML path alone (no bcc, no probes: the GPU machines have neither) to find it:
its memory and utilisation must be attributed to that sandbox, and `gpu.use` must fire
through the shipped rules. Prints one JSON report; exit 0 when everything held, 1 if not.

    PYTHONPATH=. python3 scripts/gpu_check.py [--seconds 20]

Needs root (to make the cgroup), nvidia-ml-py, torch with CUDA, and pyyaml.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ebpfguard.clock import BootClock
from ebpfguard.config import load_config
from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.enrich.enricher import Enricher
from ebpfguard.enrich.gpu import GpuWatcher, cgroup_path_of_pid, load_nvml
from ebpfguard.enrich.proctable import ProcessTable
from ebpfguard.enrich.sandbox import CgroupIndex, cgroup_root_from_proc

WORKLOAD = """
import time, torch
a = torch.randn(8192, 8192, device="cuda")
end = time.time() + float(__import__("sys").argv[1])
while time.time() < end:
    b = a @ a
torch.cuda.synchronize()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    nvml, why = load_nvml()
    if nvml is None:
        print(json.dumps({"ok": False, "error": why}))
        return 1
    root = cgroup_root_from_proc()
    sandbox = f"sandbox-gpu-check-{uuid.uuid4().hex[:6]}"
    cgroup = Path(root, sandbox)
    cgroup.mkdir()
    config = load_config()
    # The agent's own wiring: samples become `gpu` events through the enricher.
    procs = ProcessTable()
    procs.seed_from_proc()
    enricher = Enricher("gpu-check", procs, CgroupIndex(root, config["sandbox"]["cache_size"]),
                        config["sandbox"], BootClock())
    watcher = GpuWatcher(nvml, lambda s: enricher.gpu_event(s, cgroup_path_of_pid(s["pid"])), interval_s=0)
    engine = DetectionEngine(load_rules(), config["detect"])
    proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, str(args.seconds)],
                            preexec_fn=lambda: (cgroup / "cgroup.procs").write_text("0"))
    samples, alerts, started = [], [], time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < args.seconds + 30:
            for event in watcher.poll_if_due():
                if event["process"]["pid"] == proc.pid:
                    samples.append(event)
                    alerts += engine.process(event)
            time.sleep(1.0)
    finally:
        proc.kill()
        proc.wait()
        cgroup.rmdir()
    usage = [u for u in watcher.usage if u.sandbox == sandbox]
    report = {
        "sandbox": sandbox,
        "gpu": samples[-1]["gpu"] if samples else None,
        "samples": len(samples),
        "max_memory_bytes": max((s["memory_bytes"] for s in samples), default=0),
        "max_utilization_ratio": max((s["utilization_ratio"] or 0 for s in samples), default=0),
        "attributed_to_sandbox": all(s["sandbox"]["name"] == sandbox for s in samples) and bool(samples),
        "sandbox_usage_memory_bytes": sum(u.memory_bytes for u in usage),
        "gpu_use_alerts": [{"severity": a["severity"], "summary": a["summary"]} for a in alerts],
    }
    # One alert per (sandbox, pid, GPU), a second only if the severity rose: never one a poll.
    report["ok"] = (report["attributed_to_sandbox"] and report["max_memory_bytes"] > 0
                    and 1 <= len(alerts) <= 2 and len(alerts) < len(samples))
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root: the check makes a cgroup")
    sys.exit(main())
