"""The workloads: the C driver (drivers/storm.c), built on first use, run for a fixed time."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

DRIVER_SOURCE = Path(__file__).resolve().parent / "drivers" / "storm.c"

# One exec in this many runs the miner-like command line, so alerts flow during the storm.
MINER_EVERY = 10
BULK_FLOWS = 16
BURST_S = 1.0
BURST_IDLE_S = 2.0


@dataclass(frozen=True)
class Workload:
    name: str
    driver: str          # the driver's workload argument
    unit: str            # what one op is
    rate: int = 0        # 0: flat out
    extra: tuple[str, ...] = ()
    idle_after_s: float = 0.0  # quiet time after the ops, inside the measured window

    def argv(self, driver: Path, seconds: float) -> list[str]:
        return [str(driver), self.driver, f"{seconds:g}", str(self.rate), *self.extra]


WORKLOADS = (
    Workload("exec", "exec", "fork+execve", extra=(str(MINER_EVERY),)),
    Workload("connect", "connect", "connect+accept+close"),
    Workload("refused", "refused", "connect to a closed port"),
    Workload("getpgid", "getpgid", "untraced syscall"),
    Workload("bulk", "bulk", "byte", rate=BULK_FLOWS),
    Workload("burst", "connect", "connect+accept+close (1 s flat out, then idle)", idle_after_s=BURST_IDLE_S),
)


@dataclass(frozen=True)
class Run:
    """One workload run: the driver's figures and the wall-clock window it covered."""

    workload: str
    ops: int
    seconds: float
    ops_per_s: float
    ns_per_op: float
    start_ns: int
    end_ns: int


def build_driver(out_dir: Path) -> Path:
    """Compile the driver with the host's gcc (again only when the source changed)."""
    binary = out_dir / "storm"
    if not binary.exists() or binary.stat().st_mtime < DRIVER_SOURCE.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(DRIVER_SOURCE)], check=True)
    return binary


def run_workload(driver: Path, workload: Workload, seconds: float, cgroup: Optional[Path] = None) -> Run:
    """Run the driver (inside `cgroup` if given: a sandbox); the burst runs for BURST_S whatever
    `seconds` is, then stays idle."""
    duration = BURST_S if workload.idle_after_s else seconds
    argv = workload.argv(driver, duration)
    if cgroup is not None:
        # The shell moves itself into the cgroup, then becomes the driver (no preexec_fn: the
        # benchmark has threads, and a forked child may not run Python safely).
        argv = ["sh", "-c", 'echo 0 > "$0/cgroup.procs" && exec "$@"', str(cgroup), *argv]
    start = time.time_ns()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    time.sleep(workload.idle_after_s)
    end = time.time_ns()
    figures = json.loads(out)
    return Run(workload.name, figures["ops"], figures["seconds"], figures["ops_per_s"],
               figures["ns_per_op"], start, end)
