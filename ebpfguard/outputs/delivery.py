"""Delivery to one receiver: a bounded queue, a worker thread, retries, and a backlog.

The agent's main loop only ever calls `offer()`, which never blocks: the item goes on a bounded
in-memory queue, or is counted as dropped when the queue is full. Everything slow (formatting,
the network, the disk) happens on the output's own worker thread.

The worker sends each payload at once while the receiver answers. When a send fails, that
payload and every later one go to the backlog, in order: on disk (`DiskSpool`, bounded in bytes,
survives a restart) for outputs that must not lose alerts, else in memory (`MemorySpool`,
bounded in items). The backlog's head is retried with exponential backoff and jitter; the
oldest payloads are dropped, and counted, when it is full. A receiver that refuses a payload
for good (HTTP 4xx) gets it dropped and counted as `rejected`, so one bad payload cannot stop
the ones behind it.
"""

from __future__ import annotations

import os
import queue
import struct
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

# Time an output is given to send what it holds when the agent stops (Forwarders waits a
# little longer for all of them together).
SHUTDOWN_S = 2.5

# Why an output dropped a payload (the `reason` label of ebpfguard_output_dropped_total).
DROP_REASONS = ("queue_full", "spool_full", "rejected", "shutdown")


class TransientError(Exception):
    """The receiver could not take the payload now (down, timed out, 5xx): try again later."""


class PermanentError(Exception):
    """The receiver refused the payload itself (4xx): sending it again cannot help."""


class Formatter(Protocol):
    """An output's format: which events it wants, and the payloads they become."""

    def accepts(self, event: dict) -> bool:
        """Called on the main loop for every event: must be cheap and never block."""

    def payloads(self, item: dict, now: float) -> list[bytes]:
        """The payloads for one accepted item (on the worker thread)."""

    def due(self, now: float) -> list[bytes]:
        """State changes owed at this time whatever arrives (an alert timing out); usually none."""

    def resend(self, now: float, force: bool = False) -> list[bytes]:
        """Periodic re-sends of current state, when due (or now if `force`). They repeat what
        the receiver was sent, so they are not kept while it is down: once the backlog has
        drained the worker asks for them with `force`."""

    def next_due(self) -> Optional[float]:
        """When due() or resend() next may have something (monotonic seconds), or None."""


class OneShot:
    """A format whose payloads depend only on the item: nothing periodic, no state."""

    def due(self, now: float) -> list[bytes]:
        return []

    def resend(self, now: float, force: bool = False) -> list[bytes]:
        return []

    def next_due(self) -> Optional[float]:
        return None


@dataclass(frozen=True)
class Retry:
    """Exponential backoff with jitter: the n-th consecutive failure waits between half and
    all of min(max_s, initial_s * 2**n), so many agents recovering together do not retry in
    step against a receiver that just came back."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.max_s, self.initial_s * (2 ** min(failures, 30)))
        return ceiling / 2 + rand() * ceiling / 2


class OutputCounters:
    """One output's counters; written by its worker and the main loop, read by scrapes."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.dropped = {reason: 0 for reason in DROP_REASONS}
        self.queued = 0
        self.backlog = 0

    def add(self, sent: int = 0, failed: int = 0, dropped: Optional[str] = None, n_dropped: int = 1) -> None:
        with self._lock:
            self.sent += sent
            self.failed += failed
            if dropped is not None:
                self.dropped[dropped] += n_dropped

    def snapshot(self) -> "OutputSnapshot":
        with self._lock:
            return OutputSnapshot(self.name, self.sent, self.failed, dict(self.dropped), self.queued + self.backlog)


@dataclass(frozen=True)
class OutputSnapshot:
    """One output's counters at one instant, for the metrics endpoint."""

    output: str
    sent: int
    failed: int
    dropped: dict
    queue_depth: int


class MemorySpool:
    """The backlog in memory, at most `max_items`; the oldest go first when it is full."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: deque[bytes] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, payload: bytes) -> int:
        """Keep a payload; returns how many old ones were dropped to make room."""
        dropped = 0
        while len(self._items) >= self.max_items:
            self._items.popleft()
            dropped += 1
        self._items.append(payload)
        return dropped

    def head(self) -> bytes:
        return self._items[0]

    def pop(self) -> None:
        self._items.popleft()


class DiskSpool:
    """The backlog on disk, at most `max_bytes`: payloads appended to segment files (a 4-byte
    length, then the bytes), oldest segment dropped whole when full. Appending is one write()
    on an open file, so a receiver that is down costs the agent little. What was delivered
    of the oldest segment is noted in `head`, so a restarted agent resumes where this one
    stopped (a crash may deliver a few payloads twice; never out of order)."""

    SUFFIX = ".seg"
    _LENGTH = struct.Struct(">I")

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 1 << 20) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        # At most an eighth of the spool per segment: dropping one keeps most of the rest.
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 8))
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._segments: deque[list] = deque()  # [sequence, records, bytes], oldest first
        self._head: deque[bytes] = deque()     # the oldest segment's undelivered payloads
        self._tail_fd: Optional[int] = None
        self.bytes = 0
        self._count = 0
        self.lost = 0  # payloads a damaged or vanished segment took with it
        for path in sorted(self.directory.glob(f"*{self.SUFFIX}")):
            stem = path.name[: -len(self.SUFFIX)]
            if stem.isdigit():
                records = self._read(path)
                size = sum(len(r) + self._LENGTH.size for r in records)
                self._segments.append([int(stem), len(records), size])
                self.bytes += size
                self._count += len(records)
        self._next = self._segments[-1][0] + 1 if self._segments else 0
        if self._segments:
            done = self._delivered_of_head()
            head = self._read(self._path(self._segments[0][0]))
            self._head.extend(head[done:])
            self._count -= min(done, len(head))

    def __len__(self) -> int:
        return self._count

    def _path(self, sequence: int) -> Path:
        return self.directory / f"{sequence:020d}{self.SUFFIX}"

    @classmethod
    def _read(cls, path: Path) -> list[bytes]:
        """A segment's payloads; a record cut short by a crash ends it; an unreadable segment
        has none."""
        try:
            data = path.read_bytes()
        except OSError:
            return []
        records, at = [], 0
        while at + cls._LENGTH.size <= len(data):
            (size,) = cls._LENGTH.unpack_from(data, at)
            if at + cls._LENGTH.size + size > len(data):
                break
            records.append(data[at + cls._LENGTH.size: at + cls._LENGTH.size + size])
            at += cls._LENGTH.size + size
        return records

    def _delivered_of_head(self) -> int:
        try:
            sequence, done = (self.directory / "head").read_text().split()
            return int(done) if int(sequence) == self._segments[0][0] else 0
        except (OSError, ValueError):
            return 0

    def append(self, payload: bytes) -> int:
        """Keep a payload on disk; returns how many were dropped to make room (the payload
        itself counts as one if it alone is larger than the spool)."""
        record = self._LENGTH.pack(len(payload)) + payload
        if len(record) > self.max_bytes:
            return 1
        dropped = 0
        while self._segments and self.bytes + len(record) > self.max_bytes:
            dropped += self._drop_oldest()
        if self._tail_fd is None or self._segments[-1][2] >= self.segment_bytes:
            self._start_segment()
        os.write(self._tail_fd, record)
        tail = self._segments[-1]
        tail[1] += 1
        tail[2] += len(record)
        self.bytes += len(record)
        self._count += 1
        if len(self._segments) == 1:
            self._head.append(payload)
        return dropped

    def _start_segment(self) -> None:
        if self._tail_fd is not None:
            os.close(self._tail_fd)
        self._tail_fd = os.open(self._path(self._next), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segments.append([self._next, 0, 0])
        self._next += 1

    def _drop_oldest(self) -> int:
        """Remove the oldest segment; returns how many undelivered payloads went with it."""
        sequence, records, size = self._segments.popleft()
        lost = len(self._head)
        self._path(sequence).unlink(missing_ok=True)
        self.bytes -= size
        self._count -= lost
        if not self._segments:
            self._close_tail()
        self._load_head()
        return lost

    def _close_tail(self) -> None:
        if self._tail_fd is not None:
            os.close(self._tail_fd)
            self._tail_fd = None

    def _load_head(self) -> None:
        """Read the oldest segment; what it should hold and does not (a file removed or
        damaged behind our back) is counted in `lost`."""
        self._head = deque()
        while self._segments and not self._head:
            sequence, records, size = self._segments[0]
            self._head = deque(self._read(self._path(sequence)))
            missing = records - len(self._head)
            self.lost += missing
            self._count -= missing
            if not self._head:
                self._segments.popleft()
                self.bytes -= size
                if not self._segments:
                    self._close_tail()

    def head(self) -> bytes:
        return self._head[0]

    def pop(self) -> None:
        self._head.popleft()
        self._count -= 1
        sequence, records, _ = self._segments[0]
        if self._head:
            (self.directory / "head").write_text(f"{sequence} {records - len(self._head)}\n")
            return
        # The oldest segment is delivered: remove it (the tail too, when it is the oldest,
        # so the next payload starts a fresh one).
        if len(self._segments) == 1:
            self._close_tail()
        _, _, size = self._segments.popleft()
        self._path(sequence).unlink(missing_ok=True)
        self.bytes -= size
        (self.directory / "head").unlink(missing_ok=True)
        self._load_head()


class Delivery:
    """One output: the queue the main loop offers to, and the worker that sends."""

    def __init__(self, name: str, formatter: Formatter, send: Callable[[bytes], None], *,
                 queue_size: int, backlog, retry: Retry, counters: OutputCounters,
                 warn: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.formatter = formatter
        self.send = send
        self.backlog = backlog
        self.retry = retry
        self.counters = counters
        self.warn = warn
        self.clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._failures = 0
        self._retry_at = 0.0
        self._stopping = threading.Event()
        counters.backlog = len(backlog)  # a disk spool may hold payloads from the last run
        self._thread = threading.Thread(target=self._run, name=f"output-{name}", daemon=True)

    def start(self) -> "Delivery":
        self._thread.start()
        return self

    def offer(self, item: dict) -> None:
        """Queue an item for the worker if the formatter wants it; never blocks."""
        if not self.formatter.accepts(item):
            return
        self.put(item)

    def put(self, item: dict) -> None:
        """Queue an item as is (no accepts() check); never blocks."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.counters.add(dropped="queue_full")
            return
        self.counters.queued = self._queue.qsize()

    def stop(self) -> None:
        """Ask the worker to finish: what it cannot send stays on a disk spool for the next
        start, or is counted as dropped (`shutdown`)."""
        self._stopping.set()
        try:
            self._queue.put_nowait(None)  # wakes the worker (a full queue: it wakes within 1 s)
        except queue.Full:
            pass

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- the worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            item = self._next_item()
            if item is not None:
                self._handle(item)
            now = self.clock()
            due = self.formatter.next_due()
            if due is not None and now >= due:
                for payload in self.formatter.due(now):
                    self._submit(payload)
                for payload in self.formatter.resend(now):
                    self._submit(payload, refresh=True)
            self._retry_backlog()
        self._finish()

    def _next_item(self) -> Optional[dict]:
        now = self.clock()
        wake = [t for t in (self.formatter.next_due(), self._retry_at if len(self.backlog) else None) if t is not None]
        wait = max(0.0, min(wake) - now) if wake else 1.0
        try:
            item = self._queue.get(timeout=min(wait, 1.0))
        except queue.Empty:
            return None
        self.counters.queued = self._queue.qsize()
        return item

    def _handle(self, item: dict, keep: bool = False) -> None:
        """Format an item and send its payloads (or, with `keep`, only put them in the backlog)."""
        try:
            payloads = self.formatter.payloads(item, self.clock())
        except Exception as exc:  # noqa: BLE001 - one odd alert must not stop the output
            self.counters.add(dropped="rejected")
            self.warn(f"cannot format an alert: {type(exc).__name__}: {exc}")
            return
        for payload in payloads:
            if keep:
                self._keep(payload)
            else:
                self._submit(payload)
        # Give the GIL back between items: the agent's main loop, waking for the ring buffer,
        # then waits for one item's work at most, not for CPython's 5 ms switch interval.
        time.sleep(0)

    def _submit(self, payload: bytes, refresh: bool = False) -> None:
        """Send now if nothing waits before it; else keep it, in order, in the backlog.
        A `refresh` (a periodic re-send) repeats state that the backlog delivers anyway, so
        one is kept only when it finds the backlog empty: its failure is what starts one."""
        if len(self.backlog):
            if not refresh:
                self._keep(payload)
            return
        if not self._try(payload):
            self._keep(payload)

    def _keep(self, payload: bytes) -> None:
        try:
            dropped = self.backlog.append(payload)
        except OSError as exc:
            self.counters.add(dropped="spool_full")
            self.warn(f"cannot spool a payload: {exc}")
            return
        if dropped:
            self.counters.add(dropped="spool_full" if isinstance(self.backlog, DiskSpool) else "queue_full",
                              n_dropped=dropped)
            self.warn(f"backlog full: dropped the {dropped} oldest payload(s)")
        self.counters.backlog = len(self.backlog)

    def _try(self, payload: bytes) -> bool:
        """One attempt; True when the payload is done with (sent, or refused for good)."""
        try:
            self.send(payload)
        except PermanentError as exc:
            self.counters.add(failed=1, dropped="rejected")
            self.warn(f"receiver refused a payload (dropped): {exc}")
            return True
        except (TransientError, OSError) as exc:
            self.counters.add(failed=1)
            self._failures += 1
            delay = self.retry.delay(self._failures - 1)
            self._retry_at = self.clock() + delay
            self.warn(f"delivery failed, retrying in {delay:.1f}s: {exc}")
            return False
        self.counters.add(sent=1)
        self._failures = 0
        return True

    def _retry_backlog(self) -> None:
        """Send the backlog in order while the receiver takes it."""
        if not len(self.backlog) or self.clock() < self._retry_at:
            return
        # An attempt may wait out the timeout: the queue goes to the backlog first, so the
        # main loop has the whole queue to fill meanwhile.
        self._drain_queue()
        while len(self.backlog) and not self._stopping.is_set():
            if not self._try(self.backlog.head()):
                break
            self.backlog.pop()
            self._note_backlog()
            if not len(self.backlog):
                self._drained()
            if not self._queue.empty():
                return  # new items first go behind the backlog, in order; then carry on

    def _drain_queue(self) -> None:
        """Every queued item into the backlog, in order, without sending."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._handle(item, keep=True)
        self.counters.queued = 0

    def _note_backlog(self) -> None:
        lost = getattr(self.backlog, "lost", 0)
        if lost:
            self.backlog.lost = 0
            self.counters.add(dropped="spool_full", n_dropped=lost)
            self.warn(f"{lost} spooled payload(s) could not be read back")
        self.counters.backlog = len(self.backlog)

    def _drained(self) -> None:
        """The receiver took the whole backlog: re-send current state at once (periodic
        re-sends were skipped while it was down)."""
        for payload in self.formatter.resend(self.clock(), force=True):
            self._submit(payload, refresh=True)

    def _finish(self) -> None:
        """At shutdown: the queue goes behind the backlog, which is then sent while the
        receiver takes it and time remains; a disk spool keeps what is left for the next
        start (already there should the agent exit mid-send), a memory one counts it."""
        deadline = self.clock() + SHUTDOWN_S
        self._drain_queue()
        while len(self.backlog) and self.clock() < deadline and self._failures == 0:
            if not self._try(self.backlog.head()):
                break
            self.backlog.pop()
        if not isinstance(self.backlog, DiskSpool) and len(self.backlog):
            self.counters.add(dropped="shutdown", n_dropped=len(self.backlog))
            self.counters.backlog = 0
        else:
            self._note_backlog()
