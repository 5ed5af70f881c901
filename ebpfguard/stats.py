"""Pipeline counters: what went through, what the kernel lost, what userspace dropped.

One place that every stage reports to; the metrics endpoint and the loss warnings read it.
Nothing is dropped without being counted here.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class PipelineStats:
    events: Counter = field(default_factory=Counter)   # (kind, sandbox) -> n
    alerts: Counter = field(default_factory=Counter)   # (rule, severity, sandbox) -> n
    lost: Counter = field(default_factory=Counter)     # probe family -> n (kernel side)
    dropped: Counter = field(default_factory=Counter)  # (stage, reason) -> n (userspace)

    def drop(self, stage: str, reason: str, n: int = 1) -> None:
        self.dropped[(stage, reason)] += n


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
