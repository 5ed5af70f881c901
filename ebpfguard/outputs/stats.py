"""Pipeline counters: what went through, what the kernel lost, what userspace dropped.

One place that every stage reports to; the metrics endpoint and the loss warnings read it.
Nothing is dropped without being counted here.

The main loop writes these and the metrics endpoint's HTTP threads read them, so every access
holds one lock (but count_event's, the per-event one: see there): a scrape iterating a Counter
while an event adds a key to it would raise "dictionary changed size during iteration".
Readers take a `snapshot()`.
"""

from __future__ import annotations

import bisect
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional, TextIO

# Upper bounds (seconds) of the pipeline latency buckets: the drain timer (10 ms) sets the
# usual latency, the rest show a backlog building up.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Every (stage, reason) a drop is counted under, so the series exist at zero from the start.
KNOWN_DROPS = (
    ("decode", "malformed"), ("decode", "error"), ("enrich", "error"), ("enrich", "dns_malformed"),
    ("detect", "error"), ("detect", "queue_full"), ("detect", "shutdown"), ("output", "write_error"),
    ("output", "rotate_error"), ("drain", "shutdown"), ("viewer", "slow_reader"), ("gpu", "nvml_error"),
    ("respond", "error"),
)
# Where work is bounded in time, and what counts as going over (ebpfguard_budget_overruns_total):
# an event on the main loop or in detection past limits.event_budget_ms, a detector's file
# read that timed out or found every reader busy, an exec whose reads spent their budget.
OVERRUN_STAGES = ("pipeline", "detect", "file_read", "exec_files")


@dataclass(frozen=True)
class StatsSnapshot:
    """A consistent copy of the counters at one instant."""

    events: dict      # (kind, sandbox label) -> n
    alerts: dict      # (rule, severity, sandbox label) -> n
    lost: dict        # probe family -> n (kernel side, as last read by the main loop)
    dropped: dict     # (stage, reason) -> n (userspace)
    overruns: dict    # stage -> n (work that went past its time budget)
    latency_buckets: tuple[int, ...]  # per bucket of LATENCY_BUCKETS_S, then +Inf; not cumulative
    latency_sum_s: float
    events_written: int  # all events, including those of sandbox labels since forgotten
    alerts_written: int
    held_back: dict        # (kind, sandbox label) -> n: the kernel's per-sandbox rate limit
    lost_by_sandbox: dict  # (probe family, sandbox label) -> n: ring full, by whose record
    actions: dict          # (action, rule, sandbox label, outcome) -> n


class PipelineStats:
    """The counters, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: Counter = Counter()
        self._alerts: Counter = Counter()
        self._actions: Counter = Counter()
        self._lost: Counter = Counter()
        self._dropped: Counter = Counter()
        self._overruns: Counter = Counter()
        self._latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self._latency_sum_s = 0.0
        self._events_written = 0
        self._alerts_written = 0
        self._held_back: Counter = Counter()
        self._lost_by_sandbox: Counter = Counter()

    def count_event(self, kind: str, sandbox: str, latency_s: Optional[float] = None) -> None:
        """One event; `latency_s` is its time from the kernel's timestamp to its line being
        written, when it has one.

        Runs for every event, on the main loop only, so without the lock: the main loop is the
        only writer of these counters, and snapshot() copies each in one step that other
        threads cannot interleave with (dict and list copies run under the GIL)."""
        self._events[(kind, sandbox)] += 1
        self._events_written += 1
        if latency_s is not None:
            self._latency[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
            self._latency_sum_s += latency_s

    def count_alert(self, rule: str, severity: str, sandbox: str) -> None:
        with self._lock:
            self._alerts[(rule, severity, sandbox)] += 1
            self._alerts_written += 1

    def count_action(self, action: str, rule: str, sandbox: str, outcome: str) -> None:
        with self._lock:
            self._actions[(action, rule, sandbox, outcome)] += 1

    def drop(self, stage: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[(stage, reason)] += n

    def overrun(self, stage: str) -> None:
        """Work that went past its time budget (stage: one of OVERRUN_STAGES)."""
        with self._lock:
            self._overruns[stage] += 1

    def update_lost(self, family: str, total: int) -> int:
        """Record the kernel's running loss total for a family; returns how much it grew."""
        with self._lock:
            grew = total - self._lost[family]
            if grew > 0:
                self._lost[family] = total
            return grew

    def count_sandbox_flood(self, sandbox: str, held_back: dict, lost: dict) -> None:
        """What the kernel held back ({kind: n}) and lost ({probe: n}) of one sandbox's records."""
        with self._lock:
            for kind, n in held_back.items():
                self._held_back[(kind, sandbox)] += n
            for probe, n in lost.items():
                self._lost_by_sandbox[(probe, sandbox)] += n

    def forget_sandbox(self, sandbox: str) -> None:
        """Remove a sandbox label's counters: its series end (the label value is reused)."""
        with self._lock:
            for counter, position in ((self._events, 1), (self._alerts, 2), (self._held_back, 1),
                                      (self._lost_by_sandbox, 1), (self._actions, 2)):
                for key in [k for k in counter if k[position] == sandbox]:
                    del counter[key]

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            return StatsSnapshot(
                events=dict(self._events),
                alerts=dict(self._alerts),
                lost=dict(self._lost),
                dropped=dict(self._dropped),
                overruns=dict(self._overruns),
                latency_buckets=tuple(self._latency),
                latency_sum_s=self._latency_sum_s,
                events_written=self._events_written,
                alerts_written=self._alerts_written,
                held_back=dict(self._held_back),
                lost_by_sandbox=dict(self._lost_by_sandbox),
                actions=dict(self._actions),
            )


class RateLimitedWarnings:
    """Prints a warning per key at most once per interval, with how many were held back."""

    def __init__(self, interval_s: float, stream: TextIO = sys.stderr) -> None:
        self.interval_s = interval_s
        self.stream = stream
        self._last: dict[str, float] = {}
        self._held: Counter = Counter()

    def warn(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.interval_s:
            self._held[key] += 1
            return
        held = self._held.pop(key, 0)
        suffix = f" ({held} similar warnings held back)" if held else ""
        print(f"ebpfguard: warning: {message}{suffix}", file=self.stream, flush=True)
        self._last[key] = now
