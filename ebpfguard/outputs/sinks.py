"""Sinks: where finished events go. JSON Lines to stdout or a file.

Every string a sandbox controls (argv, comm, paths) is written with JSON escapes and ASCII
only, so no argument can break a line, forge another event, or put a raw terminal escape on
an operator's screen.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Optional, Protocol, TextIO

from ebpfguard.outputs.stats import PipelineStats


def to_json_line(event: dict) -> str:
    """One event as one line of ASCII JSON (control characters and non-ASCII escaped)."""
    return json.dumps(event, ensure_ascii=True, separators=(",", ":")) + "\n"


class Sink(Protocol):
    """Where the pipeline writes; the agent's loop calls flush_if_due every turn."""

    def write(self, event: dict) -> bool: ...

    def flush_if_due(self, now: Optional[float] = None) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """Buffered JSON Lines writer, flushed at least every `flush_interval_s`, and at the next
    turn of the agent's loop once it holds an alert or action (those should not wait for a batch)."""

    def __init__(self, stream: TextIO, stats: PipelineStats, flush_interval_s: float = 0.05) -> None:
        self.stream = stream
        self.stats = stats
        self.flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()
        self._pending = 0
        self._holds_alert = False
        self._last: tuple = (None, "")

    @classmethod
    def open(cls, path: Optional[str], stats: PipelineStats, flush_interval_s: float) -> "JsonLinesSink":
        """stdout when path is None, else the file opened for appending."""
        stream = sys.stdout if path is None else open(path, "a", encoding="ascii", buffering=1 << 16)
        return cls(stream, stats, flush_interval_s)

    def line_of(self, event: dict) -> Optional[str]:
        """The line just written for this very event object, if it was the last one: later
        sinks of the same write (the outputs) reuse it instead of encoding it again."""
        last, line = self._last
        return line if last is event else None

    def write(self, event: dict) -> bool:
        line = to_json_line(event)
        self._last = (event, line)
        try:
            self.stream.write(line)
        except (OSError, ValueError):
            self.stats.drop("output", "write_error")
            return False
        self._pending += 1
        self._holds_alert = self._holds_alert or event.get("kind") in ("alert", "action")
        return True

    def flush_if_due(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        if self._pending and (self._holds_alert or now - self._last_flush >= self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            self.stats.drop("output", "write_error", self._pending)
        self._pending = 0
        self._holds_alert = False
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self.stream is not sys.stdout:
            self.stream.close()


class FanOut:
    """Several sinks written as one, in order (the output file first, then the viewers)."""

    def __init__(self, *sinks) -> None:
        self.sinks = sinks

    def write(self, event: dict) -> bool:
        written = [sink.write(event) for sink in self.sinks]
        return all(written)

    def flush_if_due(self, now: Optional[float] = None) -> None:
        for sink in self.sinks:
            sink.flush_if_due(now)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
