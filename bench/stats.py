"""Small statistics for the benchmark: summaries of rounds, percentiles, timestamps."""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional, Sequence


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
    """Nanoseconds since the epoch from an RFC 3339 UTC time with up to 9 fraction digits
    (datetime keeps only microseconds, so the fraction is parsed apart)."""
    if not text.endswith("Z"):
        raise ValueError(f"not a UTC RFC 3339 time: {text!r}")
    whole, _, fraction = text[:-1].partition(".")
    return _epoch_s(whole) * 1_000_000_000 + int((fraction or "0").ljust(9, "0")[:9])


@functools.lru_cache(maxsize=1024)
def _epoch_s(whole: str) -> int:
    """Seconds since the epoch of a `YYYY-MM-DDTHH:MM:SS` UTC time (cached: a run's events
    share few distinct seconds, and strptime is slow)."""
    return int(datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp())


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """value / base, or None when either is missing or the base is not positive."""
    if value is None or base is None or base <= 0:
        return None
    return value / base
