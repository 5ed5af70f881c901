"""What the viewer knows, apart from how it is drawn: recent events, per-sandbox counts,
the active filter, the arrival rate and what the agent skipped. Plain Python, so the
filtering and counting are tested without a terminal.
"""

from __future__ import annotations

import fnmatch
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

from ebpfguard.watch.format import summary


@dataclass(frozen=True)
class Filter:
    """Which events the table shows. Empty fields match everything.

    Parsed from the filter box: `sandbox:GLOB`, `kind:exec,connect`, `rule:GLOB`, and any
    other words, which must all appear in the event's summary, process or sandbox.
    """

    sandbox: str = ""
    kinds: frozenset = frozenset()
    rule: str = ""
    words: tuple = ()
    alerts_only: bool = False

    @classmethod
    def parse(cls, text: str, sandbox: str = "", alerts_only: bool = False) -> "Filter":
        kinds: set[str] = set()
        rule = ""
        words = []
        for token in text.split():
            key, sep, value = token.partition(":")
            if sep and key == "sandbox":
                sandbox = value
            elif sep and key == "kind":
                kinds.update(k for k in value.split(",") if k)
            elif sep and key == "rule":
                rule = value
            else:
                words.append(token.lower())
        return cls(sandbox, frozenset(kinds), rule, tuple(words), alerts_only)

    def matches(self, event: dict) -> bool:
        kind = event.get("kind")
        if self.alerts_only and kind != "alert":
            return False
        if self.kinds and kind not in self.kinds:
            return False
        if self.sandbox and not fnmatch.fnmatchcase(str((event.get("sandbox") or {}).get("name")), self.sandbox):
            return False
        if self.rule and not (kind == "alert" and fnmatch.fnmatchcase(str(event.get("rule")), self.rule)):
            return False
        if self.words:
            haystack = searchable(event)
            return all(word in haystack for word in self.words)
        return True

    def describe(self) -> str:
        parts = []
        if self.alerts_only:
            parts.append("alerts only")
        if self.sandbox:
            parts.append(f"sandbox:{self.sandbox}")
        if self.kinds:
            parts.append("kind:" + ",".join(sorted(self.kinds)))
        if self.rule:
            parts.append(f"rule:{self.rule}")
        parts.extend(self.words)
        return " ".join(parts) or "everything"


def searchable(event: dict) -> str:
    """The text free-text filter words are looked for in (lower case)."""
    process = event.get("process") or {}
    return " ".join((summary(event), str(process.get("comm", "")), str(process.get("exe", "")),
                     str((event.get("sandbox") or {}).get("name", "")), str(event.get("pid", "")),
                     str(process.get("pid", "")))).lower()


@dataclass
class SandboxCounts:
    events: int = 0
    alerts: int = 0


@dataclass
class EventStore:
    """The newest `capacity` events (each with a sequence number), and running totals."""

    capacity: int = 20000
    clock: Callable[[], float] = time.monotonic
    events: deque = field(init=False)
    sandboxes: dict = field(default_factory=dict)   # name -> SandboxCounts
    kinds: Counter = field(default_factory=Counter)
    received: int = 0
    skipped_by_agent: int = 0
    _arrivals: deque = field(default_factory=deque)  # (clock, n) batches of the last seconds

    def __post_init__(self) -> None:
        self.events = deque(maxlen=self.capacity)

    def add(self, batch: Iterable[dict]) -> list[tuple[int, dict]]:
        """Store a batch; returns it numbered. `skipped` markers count, they are not events."""
        added = []
        for event in batch:
            if event.get("kind") == "skipped":
                self.skipped_by_agent += int(event.get("missed") or 0)
            else:
                self._count(event)
            self.received += 1
            added.append((self.received, event))
        self.events.extend(added)
        self._arrivals.append((self.clock(), len(added)))
        return added

    def _count(self, event: dict) -> None:
        name = str((event.get("sandbox") or {}).get("name", "?"))
        counts = self.sandboxes.setdefault(name, SandboxCounts())
        if event.get("kind") == "alert":
            counts.alerts += 1
        else:
            counts.events += 1
        self.kinds[event.get("kind")] += 1

    def rate(self, window_s: float = 5.0) -> float:
        """Events per second over the last `window_s` seconds."""
        now = self.clock()
        while self._arrivals and self._arrivals[0][0] < now - window_s:
            self._arrivals.popleft()
        return sum(n for _, n in self._arrivals) / window_s

    def newest(self, flt: Filter, limit: int) -> list[tuple[int, dict]]:
        """Up to `limit` matching events, newest first."""
        return list(_take(flt, reversed(self.events), limit))

    def alerts(self, limit: int) -> list[tuple[int, dict]]:
        return self.newest(Filter(alerts_only=True), limit)

    def get(self, seq: int) -> Optional[dict]:
        first = self.events[0][0] if self.events else 0
        index = seq - first
        return self.events[index][1] if 0 <= index < len(self.events) else None


def _take(flt: Filter, items: Iterator[tuple[int, dict]], limit: int) -> Iterator[tuple[int, dict]]:
    for n, (seq, event) in enumerate(x for x in items if flt.matches(x[1])):
        if n >= limit:
            return
        yield seq, event
