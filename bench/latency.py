"""Latency from syscall to line written: the event's kernel `time` against the moment its
line appeared in the agent's output file (bench/tail.py), sorted into workload windows."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Callable, Iterable, Sequence

from bench.stats import percentile, rfc3339_ns
from bench.workloads import Run


def latencies_by_window(lines: Iterable[tuple[bytes, int]], runs: Sequence[Run],
                        keep: Callable[[dict], bool] = lambda record: True) -> dict[str, dict[str, list[int]]]:
    """{workload: {"event": [ns...], "alert": [ns...]}} for the records `keep` accepts whose
    syscall fell in a workload's window. An alert's syscall time is its triggering event's."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"event": [], "alert": []})
    for line, written_ns in lines:
        record = json.loads(line)
        if not keep(record):
            continue
        is_alert = record.get("kind") == "alert"
        at = rfc3339_ns((record["event"] if is_alert else record)["time"])
        for run in runs:
            if run.start_ns <= at <= run.end_ns:
                out[run.workload]["alert" if is_alert else "event"].append(written_ns - at)
                break
    return out


def latency_summary(values_ns: list[int]) -> dict:
    """p50/p99/max in milliseconds, and how many; empty when there were none."""
    if not values_ns:
        return {}
    values = sorted(values_ns)
    return {"n": len(values), "p50_ms": percentile(values, 50) / 1e6,
            "p99_ms": percentile(values, 99) / 1e6, "max_ms": values[-1] / 1e6}
