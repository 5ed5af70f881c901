"""Sinks: where finished events go. JSON Lines to stdout or a file.

Every string a sandbox controls (argv, comm, paths) is written with JSON escapes and ASCII
only, so no argument can break a line, forge another event, or put a raw terminal escape on
an operator's screen.

The event file holds every command line on the host: it is created 0600 (0640 with
`output.group`), and made so if it already existed. Its size is bounded: past
`output.max_bytes` it is renamed FILE.1 (FILE.1 to FILE.2, ..., up to `output.keep`) and a
new FILE begun. It is written O_APPEND, so logrotate's copytruncate works too: after the
truncation the next line lands at the new end, with no hole of zeros before it.
"""

from __future__ import annotations

import errno
import grp
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Mapping, Optional, Protocol, TextIO, Union

import orjson

from ebpfguard.outputs.stats import PipelineStats


def to_json_bytes(event: dict) -> bytes:
    """One event as one line of ASCII JSON, newline included (control characters, DEL and
    non-ASCII escaped).

    orjson does the common case, several times faster than the stdlib; it writes UTF-8 and
    leaves DEL raw, so a line that is not plain printable ASCII (a sandbox's non-ASCII
    argv, say) is encoded again by the stdlib with `ensure_ascii`. So are what orjson
    refuses: integers beyond 64 bits, non-string keys, lone surrogates, deep nesting. Both
    paths give the same JSON text (orjson writes NaN as null where the stdlib writes the
    non-JSON NaN)."""
    try:
        line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        pass
    else:
        if line.isascii() and b"\x7f" not in line:
            return line
    return (json.dumps(event, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def to_json_line(event: dict) -> str:
    """One event as one line of ASCII JSON (control characters and non-ASCII escaped)."""
    return to_json_bytes(event).decode("ascii")


class Sink(Protocol):
    """Where the pipeline writes; the agent's loop calls flush_if_due every turn. A sink may
    also take a batch in one call (`write_all(events) -> list[bool]`, see write_all)."""

    def write(self, event: dict) -> bool: ...

    def flush_if_due(self, now: Optional[float] = None) -> None: ...

    def close(self) -> None: ...


def write_all(sink: "Sink", events: list) -> list[bool]:
    """Write events to a sink, in order, through its `write_all` where it has one (one call
    for a drain's events, not one per event); whether each was written."""
    batch = getattr(sink, "write_all", None)
    if batch is not None:
        return batch(events)
    return [sink.write(event) for event in events]


@dataclass(frozen=True)
class EventFile:
    """Where and how the event file is kept (the `output` section of the config)."""

    path: str
    max_bytes: int = 0  # 0: no bound here (logrotate's copytruncate may keep it instead)
    keep: int = 3
    gid: Optional[int] = None  # group allowed to read it (mode 0640), else 0600

    @classmethod
    def from_config(cls, path: str, output: Mapping[str, Any]) -> "EventFile":
        group = output.get("group") or None
        gid = None
        if group is not None:
            try:
                gid = int(group) if str(group).isdigit() else grp.getgrnam(str(group)).gr_gid
            except KeyError:
                raise OSError(errno.EINVAL, f"output.group: no group {group!r}", path) from None
        return cls(path, int(output.get("max_bytes", 0)), int(output.get("keep", 3)), gid)

    @property
    def mode(self) -> int:
        return 0o640 if self.gid is not None else 0o600

    def open(self) -> BinaryIO:
        """The file, opened to append, its mode (and group) set whether it is new or not."""
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, self.mode)
        try:
            if self.gid is not None:
                os.fchown(descriptor, -1, self.gid)
            os.fchmod(descriptor, self.mode)
        except OSError:
            os.close(descriptor)
            raise
        return io.open(descriptor, "ab", buffering=1 << 16)

    def rotate(self) -> None:
        """FILE -> FILE.1 -> ... -> FILE.<keep>; the oldest is overwritten."""
        for number in range(self.keep - 1, 0, -1):
            older = f"{self.path}.{number}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{number + 1}")
        os.replace(self.path, f"{self.path}.1")


class JsonLinesSink:
    """Buffered JSON Lines writer, flushed at least every `flush_interval_s`, and at the next
    turn of the agent's loop once it holds an alert or action (those should not wait for a batch)."""

    def __init__(self, stream: Union[TextIO, BinaryIO], stats: PipelineStats, flush_interval_s: float = 0.05,
                 file: Optional[EventFile] = None) -> None:
        self.stream = stream
        # The event file takes the encoder's bytes as they are; a text stream (stdout) the
        # same line as text.
        self._binary = not isinstance(stream, io.TextIOBase)
        self.stats = stats
        self.flush_interval_s = flush_interval_s
        self.file = file
        self._last_flush = time.monotonic()
        self._pending = 0
        self._holds_alert = False
        self._last: tuple = (None, b"")

    @classmethod
    def open(cls, path: Optional[str], stats: PipelineStats, output: Mapping[str, Any]) -> "JsonLinesSink":
        """stdout when path is None, else the event file (see EventFile) opened for appending."""
        flush_interval_s = output["flush_interval_ms"] / 1000
        if path is None:
            return cls(sys.stdout, stats, flush_interval_s)
        file = EventFile.from_config(path, output)
        return cls(file.open(), stats, flush_interval_s, file)

    def line_of(self, event: dict) -> Optional[bytes]:
        """The line just written for this very event object, if it was the last one: later
        sinks of the same write (the outputs) reuse it instead of encoding it again."""
        last, line = self._last
        return line if last is event else None

    def write(self, event: dict) -> bool:
        return self.write_all([event])[0]

    def write_all(self, events: list) -> list[bool]:
        """Events as lines, in one write to the stream; whether each was written."""
        if not events:
            return []
        lines = [to_json_bytes(event) for event in events]
        self._last = (events[-1], lines[-1])
        data = b"".join(lines)
        try:
            self.stream.write(data if self._binary else data.decode("ascii"))
        except (OSError, ValueError):
            self.stats.drop("output", "write_error", len(events))
            return [False] * len(events)
        self._pending += len(events)
        self._holds_alert = self._holds_alert or any(event.get("kind") in ("alert", "action") for event in events)
        return [True] * len(events)

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
        if self.file is not None and self.file.max_bytes:
            self._rotate_if_full()

    def _rotate_if_full(self) -> None:
        # fstat, not a count of bytes written: a copytruncate may have emptied the file.
        try:
            if os.fstat(self.stream.fileno()).st_size < self.file.max_bytes:
                return
        except (OSError, ValueError):
            return
        self.stream.close()
        try:
            self.file.rotate()
        except OSError:
            self.stats.drop("output", "rotate_error")
        try:
            self.stream = self.file.open()
            self._binary = True
        except OSError:
            # The closed stream stays: the lines that follow are counted as write errors.
            self.stats.drop("output", "rotate_error")

    def close(self) -> None:
        self.flush()
        if self.stream is not sys.stdout:
            self.stream.close()


class HeldUntilTurnEnd:
    """A sink written at the end of each turn of the agent's loop (`flush_if_due`) instead
    of once per event: for bookkeeping nobody reads within a turn (the sandbox history).

    Fed as a batch, its code stays in the CPU's caches: per event, the history cost half as
    much this way as between the decoding and encoding of each event (bench/pipeline_cpu.py).
    It holds at most a turn's events (a drain's, and the alerts written with them), in order.
    """

    def __init__(self, sink: "Sink") -> None:
        self.sink = sink
        self._held: list = []

    def write(self, event: dict) -> bool:
        self._held.append(event)
        return True

    def write_all(self, events: list) -> list[bool]:
        self._held.extend(events)
        return [True] * len(events)

    def release(self) -> None:
        """Write what is held, in order."""
        held, self._held = self._held, []
        write = self.sink.write
        for event in held:
            write(event)

    def flush_if_due(self, now: Optional[float] = None) -> None:
        self.release()
        self.sink.flush_if_due(now)

    def close(self) -> None:
        self.release()
        self.sink.close()


class FanOut:
    """Several sinks written as one, in order (the output file first, then the viewers)."""

    def __init__(self, *sinks) -> None:
        # Nested fan-outs are flattened: one call per sink for each event.
        self.sinks = tuple(inner for sink in sinks for inner in (sink.sinks if isinstance(sink, FanOut) else (sink,)))

    def write(self, event: dict) -> bool:
        written = True
        for sink in self.sinks:
            written = sink.write(event) and written
        return written

    def write_all(self, events: list) -> list[bool]:
        """The events to each sink in turn, a batch per sink; written where every sink took it."""
        written = [True] * len(events)
        for sink in self.sinks:
            written = [a and b for a, b in zip(write_all(sink, events), written)]
        return written

    def flush_if_due(self, now: Optional[float] = None) -> None:
        for sink in self.sinks:
            sink.flush_if_due(now)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
