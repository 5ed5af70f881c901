"""Detection beside the agent's main loop: on it while that cannot wait, else on a worker.

The main loop drains the ring buffer and writes events; nothing a sandbox can make slow (its
config files, a file system that does not answer, long argv to score) may hold that up. Most
detection cannot wait on anything: an exec whose command line the rules read without a file,
a flow, a DNS answer. The main loop detects those itself, at the end of each drain
(`flush`), and writes their alerts in the same turn. Handing them to a thread would cost more
than detecting them: two or three thread switches and hand-overs of the GIL a turn, each a
wake-up that can land on the CPU a busy sandbox is using (docs/performance.md, "Exec storms,
fourth pass").

The rest goes to one worker thread, in event order: from the first event whose detection may
read a sandbox's file (`may_wait` says which: a miner's config, an ssh client's), everything
while the worker still holds events, and for INLINE_BACKOFF_S everything after a batch whose
detection on the main loop took more than INLINE_BUDGET_S (a command line made slow to
score). One lock keeps detectors' state on one thread at a time. The alerts found wait in
`take_alerts` for the main loop, which writes them (the sinks and the responder stay
single-threaded); while it rests between turns it is told at once (`wait_for_alerts`).

Events are handed over a batch at a time (`submit` collects, `flush` hands the batch over):
one queue operation and one thread wake-up per batch, not per event. Under a stream of events
batches are handed over at most every `handoff_interval_s` and grow meanwhile; a lone event
goes at once, and a held one waits for the main loop's next turn (at most its drain
interval). Events of `urgent_kinds` (those that raise most alerts: an exec, a DNS answer) go
at once, in a stream of their own that the worker takes first, so a backlog of bulk events (a
connect storm's) does not hold up their alerts; each stream stays in event order, and the
urgent kinds are the causes (an exec, a DNS answer) of what the bulk ones are judged by (its
connects). Whoever finds alerts makes `alerts_fd` readable, which ends the main loop's wait.
The main loop never waits for the worker: a backlog past `max_queue` events drops the batch's
detection (counted per event) rather than let the ring buffer fill, and at shutdown the
worker gets a bounded time to finish before the agent exits without it.
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
import queue
import select
import threading
import time
import weakref
from typing import Callable, Optional

_STOP = object()
# The shortest time between two hand-overs, unless a batch reaches HANDOFF_BATCH events.
HANDOFF_INTERVAL_S = 0.005
HANDOFF_BATCH = 256
# Detection of one turn's batch on the main loop past this sends the rest, and the batches of
# the next INLINE_BACKOFF_S, to the worker. Storms' batches take less (rate limit off, 2 vCPUs:
# an exec storm's p50 0.3 ms and p99 2 ms, a connect storm's 0.6 and 1 ms); one command line
# built to be slow to score takes up to ~15 ms (a `bash -c` of 300 commands, 4,096 arguments).
INLINE_BUDGET_S = 0.005
INLINE_BACKOFF_S = 1.0


class DetectionAbandoned(BaseException):
    """Raised inside the worker at shutdown to end the detection it is stuck in."""


class DetectWorker:
    """Runs `detect(event) -> alerts` for each submitted event on its own thread; counts overruns."""

    def __init__(self, detect: Callable[[dict], list], max_queue: int, budget_s: float,
                 on_overrun: Callable[[], None], on_full: Callable[[], None],
                 poll: Optional[Callable[[], list]] = None, handoff_interval_s: float = HANDOFF_INTERVAL_S,
                 urgent_kinds: frozenset = frozenset(),
                 may_wait: Optional[Callable[[dict], bool]] = None) -> None:
        """`poll`, when given, returns alerts found after their event; it is called after
        each batch and at each `wake`, by whoever detects (one thread at a time). The idle
        worker sleeps until woken: whoever finds late alerts calls `wake` (on a VM each
        wakeup of a Python thread costs milliseconds of CPU: docs/performance.md).
        Events of `urgent_kinds` are handed over at once and detected first (the module's
        docstring says why). `may_wait(event)` says whether detecting an event may wait on
        what a sandbox controls (a file); the others are detected on the main loop while the
        worker is idle. Without it, every event goes to the worker."""
        self.handoff_interval_s = handoff_interval_s
        self._last_handoff = -handoff_interval_s
        self.detect = detect
        self.poll = poll
        self.budget_s = budget_s
        self.on_overrun = on_overrun
        self.on_full = on_full
        self.max_queue = max_queue
        # SimpleQueue: a put and a get are one C call each (queue.Queue's run Python
        # Conditions, which cost more than a cheap event's detection).
        self._wake: queue.SimpleQueue = queue.SimpleQueue()
        # Batches handed over, taken by the worker from the left (a deque's append and
        # popleft are safe across threads).
        self._urgent: collections.deque = collections.deque()
        self._bulk: collections.deque = collections.deque()
        self._pending: list = []  # submitted on the main loop, not yet handed over
        self.urgent_kinds = urgent_kinds
        self._pending_urgent: list = []
        self._backlog = 0  # events handed over and not yet done
        self._backlog_lock = threading.Lock()
        self._alerts: collections.deque = collections.deque()
        # Set when alerts wait in take_alerts: the main loop, resting between turns, writes
        # them at once rather than at its next turn. An eventfd, so that the main loop can wait
        # for it beside the ring buffers (`alerts_fd`): readable while alerts wait.
        self._alerts_ready = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._alerts_poll = select.poll()
        self._alerts_poll.register(self._alerts_ready, select.POLLIN)
        weakref.finalize(self, os.close, self._alerts_ready)
        self.may_wait = may_wait
        # Held while detecting, on the main loop or the worker: detectors' state has one thread.
        self._detecting = threading.Lock()
        self._inline_after = 0.0  # monotonic time before which every batch goes to the worker
        self._thread = threading.Thread(target=self._run, name="ebpfguard-detect", daemon=True)
        self._thread.start()

    def submit(self, event: dict) -> None:
        """Collect an event for detection (main loop only); `flush` hands it over."""
        if event.get("kind") in self.urgent_kinds:
            self._pending_urgent.append(event)
        else:
            self._pending.append(event)

    def flush(self, force: bool = False) -> None:
        """Detect what was submitted here, as far as that cannot wait (`_detect_here`), and
        hand the rest to the worker, unless the last hand-over was under
        `handoff_interval_s` ago and none of it is urgent (then the next call does; `force`:
        all of it to the worker, now). Never blocks."""
        urgent, bulk = self._pending_urgent, self._pending
        if not urgent and not bulk:
            return
        now = time.monotonic()
        if not force:
            urgent, bulk = self._pending_urgent, self._pending = self._detect_here(urgent, bulk, now)
            if not urgent and not bulk:
                return
            if not urgent and now - self._last_handoff < self.handoff_interval_s and len(bulk) < HANDOFF_BATCH:
                return
        self._last_handoff = now
        self._pending_urgent, self._pending = [], []
        with self._backlog_lock:
            if self._backlog + len(urgent) + len(bulk) > self.max_queue:
                full = True
            else:
                full = False
                self._backlog += len(urgent) + len(bulk)
        if full:
            for _ in range(len(urgent) + len(bulk)):
                self.on_full()
            return
        if urgent:
            self._urgent.append(urgent)
        if bulk:
            self._bulk.append(bulk)
        self._wake.put(None)

    def _detect_here(self, urgent: list, bulk: list, now: float) -> tuple[list, list]:
        """Detect a batch's events on the calling thread (the main loop), urgent ones first
        as on the worker, then collect the late alerts; what is left for the worker (urgent,
        bulk). Stops at the first event whose detection may wait, and once the batch has
        taken INLINE_BUDGET_S (then the next INLINE_BACKOFF_S of batches go to the worker
        whole); does nothing while the worker holds events (they come first)."""
        if self.may_wait is None or now < self._inline_after or self._backlog:
            return urgent, bulk
        if not self._detecting.acquire(blocking=False):
            return urgent, bulk  # the worker is detecting (late alerts): it takes this batch too
        deadline = now + INLINE_BUDGET_S
        done = 0
        try:
            for event in (*urgent, *bulk):
                if self._may_wait(event):
                    break
                self._detect(event)
                done += 1
                if time.monotonic() > deadline:
                    self._inline_after = time.monotonic() + INLINE_BACKOFF_S
                    break
            if self.poll is not None:
                self._alerts.extend(self.poll())
        finally:
            self._detecting.release()
        return urgent[done:], bulk[max(0, done - len(urgent)):]

    def _may_wait(self, event: dict) -> bool:
        assert self.may_wait is not None
        try:
            return self.may_wait(event)
        except Exception:  # noqa: BLE001 - unsure: the worker detects it (and counts its errors)
            return True

    def wake(self) -> None:
        """Have the worker ask `poll` for late alerts now (from any thread)."""
        self._wake.put(None)

    def holds_back(self) -> bool:
        """Whether submitted events wait for a later hand-over (the interval not yet up)."""
        return bool(self._pending or self._pending_urgent)

    def _run(self) -> None:
        try:
            while True:
                token = self._wake.get()
                with self._detecting:
                    self._work()
                    if self.poll is not None:
                        self._alerts.extend(self.poll())
                self._tell_alerts()
                if token is _STOP:
                    return
        except DetectionAbandoned:
            return

    def _work(self) -> None:
        """Every batch handed over: the urgent ones first, and again between bulk events."""
        while self._urgent or self._bulk:
            self._work_urgent()
            if self._bulk:
                for event in self._bulk.popleft():
                    self._detect_handed_over(event)
                    if self._urgent:
                        self._work_urgent()

    def _work_urgent(self) -> None:
        while self._urgent:
            for event in self._urgent.popleft():
                self._detect_handed_over(event)
            self._tell_alerts()

    def _tell_alerts(self) -> None:
        if self._alerts:
            os.eventfd_write(self._alerts_ready, 1)

    @property
    def alerts_fd(self) -> int:
        """A file descriptor readable while alerts wait to be taken, for the main loop's wait."""
        return self._alerts_ready

    def wait_for_alerts(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for alerts to take (from the main loop); whether there are."""
        if not self._alerts_poll.poll(max(0, math.ceil(timeout_s * 1000))):
            return False
        self._clear_alerts_ready()  # before take_alerts: an alert found after it sets it again
        return True

    def _clear_alerts_ready(self) -> None:
        try:
            os.eventfd_read(self._alerts_ready)
        except BlockingIOError:
            pass

    def _detect_handed_over(self, event: dict) -> None:
        with self._backlog_lock:
            self._backlog -= 1  # started: no longer waiting
        self._detect(event)

    def _detect(self, event: dict) -> None:
        started = time.monotonic()
        self._alerts.extend(self.detect(event))
        if time.monotonic() - started > self.budget_s:
            self.on_overrun()

    def take_alerts(self) -> list:
        """The alerts found since the last call, in the order found: each stream's (urgent,
        bulk) in event order, urgent ones ahead of bulk events handed over before them. Safe
        from another thread."""
        self._clear_alerts_ready()
        taken = []
        while self._alerts:
            taken.append(self._alerts.popleft())
        return taken

    def begin_stop(self, timeout_s: float) -> None:
        """Ask the worker to finish what is queued within `timeout_s`, without waiting: the
        agent detaches its probes meanwhile. `finish_stop` collects the outcome."""
        self.flush(force=True)
        self._stop_deadline = time.monotonic() + timeout_s
        self._wake.put(_STOP)

    def finish_stop(self) -> int:
        """Wait out what is left of the stop's time; the events the worker did not start."""
        self._thread.join(max(0.0, self._stop_deadline - time.monotonic()))
        if not self._thread.is_alive():
            return 0
        with self._backlog_lock:
            undone = max(0, self._backlog)
        # Still in one event: end it at its next bytecode, so the thread stops competing with
        # the shutdown for the interpreter (a thread blocked in a system call ends at exit).
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread.ident),
                                                   ctypes.py_object(DetectionAbandoned))
        return undone

    def stop(self, timeout_s: float) -> int:
        """Let the worker finish what is queued within `timeout_s`; the events it did not reach."""
        self.begin_stop(timeout_s)
        return self.finish_stop()
