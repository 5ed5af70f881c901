"""What the escape and tamper probes cost the host: getpgid and fork+exec, ns per op.

    python -m bench.lineage_overhead [--rounds 5] [--seconds 2]

Three configurations, in rotated order every round: no probes; every probe family but escape
and tamper; every family. The probes are compiled and attached as the agent does (tracepoints;
the cgroup hooks are not on these paths), and their rings are drained by a thread so that
records are really written. The lineage lookups of every record header (bpf/common.h) are in
both probe configurations: `all - (escape, tamper)` against `all` is the cost of the new hook
families; against `none`, of the probes as a whole. Prints one JSON object: the median ns/op
per configuration and workload, min-max, and the ratio to `none`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
from pathlib import Path

from bench.workloads import Workload, build_driver, run_workload
from ebpfguard.config import load_config
from ebpfguard.kernel.load import PROBE_FAMILIES, RINGS, compile_flags, ensure_tracefs, program_text

WORKLOADS = (Workload("getpgid", "getpgid", "untraced syscall"),
             Workload("exec", "exec", "fork+execve", extra=("0",)))
CONFIGURATIONS = {
    "none": None,
    "all - (escape, tamper)": tuple(f for f in PROBE_FAMILIES if f not in ("escape", "tamper")),
    "all": tuple(PROBE_FAMILIES),
}


class Probes:
    """bcc-compiled families (tracepoints attach at load), drained by a thread."""

    def __init__(self, families: tuple[str, ...]) -> None:
        from bcc import BPF

        self.bpf = BPF(text=program_text(families), cflags=compile_flags(load_config(), ensure_tracefs()))
        for ring in RINGS:
            self.bpf[ring].open_ring_buffer(lambda _ctx, _data, _size: 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            self.bpf.ring_buffer_poll(20)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.bpf.cleanup()


def measure(rounds: int, seconds: float) -> dict:
    driver = build_driver(Path(tempfile.mkdtemp(prefix="ebpfguard-bench-")))
    runs: dict = {name: {w.name: [] for w in WORKLOADS} for name in CONFIGURATIONS}
    names = list(CONFIGURATIONS)
    for round_no in range(rounds):
        for name in names[round_no % len(names):] + names[:round_no % len(names)]:
            families = CONFIGURATIONS[name]
            probes = Probes(families) if families else None
            try:
                for workload in WORKLOADS:
                    runs[name][workload.name].append(run_workload(driver, workload, seconds).ns_per_op)
            finally:
                if probes is not None:
                    probes.close()
    out: dict = {}
    for name, per_workload in runs.items():
        for workload, values in per_workload.items():
            base = statistics.median(runs["none"][workload])
            out.setdefault(workload, {})[name] = {
                "ns_per_op": round(statistics.median(values), 1),
                "min": round(min(values), 1), "max": round(max(values), 1),
                "ratio_to_none": round(statistics.median(values) / base, 3),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds, args.seconds), indent=2))


if __name__ == "__main__":
    main()
