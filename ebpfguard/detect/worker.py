"""Detection off the agent's main loop.

The main loop drains the ring buffer and writes events; everything a sandbox can make slow
(its config files, long argv to score, a file system that does not answer) happens here, on
one worker thread, in event order. The main loop never waits for it: a full queue drops the
event's detection (counted) rather than let the ring buffer fill, and at shutdown the worker
gets a bounded time to finish before the agent exits without it (a daemon thread).
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
from typing import Callable

_STOP = object()


class DetectionAbandoned(BaseException):
    """Raised inside the worker at shutdown to end the detection it is stuck in."""


class DetectWorker:
    """Runs `detect(event)` for each submitted event on its own thread; counts overruns."""

    def __init__(self, detect: Callable[[dict], None], max_queue: int, budget_s: float,
                 on_overrun: Callable[[], None], on_full: Callable[[], None]) -> None:
        self.detect = detect
        self.budget_s = budget_s
        self.on_overrun = on_overrun
        self.on_full = on_full
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="ebpfguard-detect", daemon=True)
        self._thread.start()

    def submit(self, event: dict) -> None:
        """Queue an event for detection; never blocks."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.on_full()

    def _run(self) -> None:
        try:
            while True:
                event = self._queue.get()
                if event is _STOP:
                    return
                started = time.monotonic()
                self.detect(event)
                if time.monotonic() - started > self.budget_s:
                    self.on_overrun()
        except DetectionAbandoned:
            return

    def stop(self, timeout_s: float) -> int:
        """Let the worker finish what is queued within `timeout_s`; the events it did not reach."""
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(_STOP, timeout=timeout_s)
            queued_stop = 1
        except queue.Full:
            queued_stop = 0
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if not self._thread.is_alive():
            return 0
        undone = max(0, self._queue.qsize() - queued_stop)
        # Still in one event: end it at its next bytecode, so the thread stops competing with
        # the shutdown for the interpreter (a thread blocked in a system call ends at exit).
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread.ident),
                                                   ctypes.py_object(DetectionAbandoned))
        return undone
