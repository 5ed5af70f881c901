"""Small statistics for the benchmark: summaries of rounds, percentiles, timestamps."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from ebpfguard.clock import event_time_ns


@dataclass(frozen=True)
class Summary:
    """Median with the min-max range of a set of rounds."""

    median: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def summarize(values: Sequence[float]) -> Optional[Summary]:
    """None for no values: a figure that was not measured is not shown as zero."""
    if not values:
        return None
    return Summary(statistics.median(values), min(values), max(values), len(values))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values: always an observed value."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def rfc3339_ns(text: str) -> int:
    """Nanoseconds since the epoch of an event's RFC 3339 UTC time (ns precision kept)."""
    value = event_time_ns(text) if text.endswith("Z") else None
    if value is None:
        raise ValueError(f"not a UTC RFC 3339 time: {text!r}")
    return value


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """value / base, or None when either is missing or the base is not positive."""
    if value is None or base is None or base <= 0:
        return None
    return value / base
