"""Executables scanned for miner signatures: bounded reads, a cache, a worker thread.

`ExecutableScanner.submit(event)` costs the caller one queue put, or less: an executable
already scanned, on a file system whose attributes are asked of no one (`peek_executable`:
ext2/3/4 or tmpfs mounted in the agent's namespace, through an O_PATH descriptor that opens
nothing), has its cached verdict at once, with no thread woken (most execs: hosts run the same
few programs over and over). Otherwise a worker thread opens the executable the exec'd process is running (`/proc/<pid>/exe`: the very inode the
kernel mapped, whatever its name, even deleted), looks its (device, inode, size, mtime) up
in a bounded LRU cache, and on a miss reads at most `max_bytes` of it, hashes it (whole files
only) and runs the YARA rules on it with yara-x, under a per-scan timeout. Verdicts wait in
`results()` until the caller collects them. The worker never blocks the main loop: a full
queue drops the scan and counts it (`dropped`).

yara-x matches in linear time and treats the file as data, so a hostile binary cannot make
the scan run away; the read bound caps memory and the timeout caps CPU.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import stat
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import yara_x

from ebpfguard.detect.filereader import O_PATH, QUICK_FSTYPES, local_fstype
from ebpfguard.detect.registry import Event
from ebpfguard.kernel.scheduling import run_this_thread_as_normal

log = logging.getLogger(__name__)

# An exec whose process left /proc before the agent's process table knew it exited is asked
# about again (`retry_gone`) for this long, at most this many at once: a daemon's parent exits
# microseconds after its exec, before the records of its fork and exit are read.
GONE_RECHECK_S = 2.0
MAX_GONE = 1024

# (st_dev, st_ino, st_size, st_mtime_ns): a file changed in place gets a new key.
FileKey = tuple[int, int, int, int]
# event -> an open, read-only descriptor on the executable the event's process runs, or None.
OpenExecutable = Callable[[Event], Optional[int]]
# event -> the cache key of the executable the event's process runs, when telling it cannot
# wait on a file system; None otherwise (the worker finds out). Raises ExecutableGone when the
# process has no executable left to open (it exited): the worker could not open it either.
PeekExecutable = Callable[[Event], Optional[FileKey]]


class ExecutableGone(Exception):
    """The event's process is gone (or never had an executable): nothing to scan."""


@dataclass(frozen=True)
class ScanVerdict:
    """What one executable is: the YARA rules it matched and whether its hash is listed."""

    rules: tuple[str, ...]
    sha256: Optional[str]  # None when the file was larger than the read bound
    known_release: bool
    scanned_bytes: int
    size: int
    timed_out: bool = False

    @property
    def is_miner(self) -> bool:
        return bool(self.rules) or self.known_release


def open_process_executable(event: Event, proc_root: str = "/proc") -> Optional[int]:
    """The executable of the event's process, opened through `/proc/<pid>/exe`.

    The one place this module touches the host's files (so it can be routed through a
    safer reader later): the magic link resolves to the inode the kernel executed, in the
    process's own mount namespace, so renames, deleted files and chroots do not matter.
    """
    pid = (event.get("process") or {}).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        return os.open(f"{proc_root}/{pid}/exe", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def peek_executable(event: Event, proc_root: str = "/proc") -> Optional[FileKey]:
    """The key of the event's executable, if that cannot wait: `/proc/<pid>/exe` opened O_PATH
    (no open reaches the file system), on a file system known not to call out (filereader)."""
    pid = (event.get("process") or {}).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        descriptor = os.open(f"{proc_root}/{pid}/exe", O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ExecutableGone() from None
    except OSError:
        return None
    try:
        if local_fstype(descriptor) not in QUICK_FSTYPES:
            return None
        info = os.fstat(descriptor)
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None
    except OSError:
        return None
    finally:
        os.close(descriptor)


def compile_rules(paths: Iterable[str]) -> yara_x.Rules:
    """One rule set from YARA files; a broken file is an error naming it."""
    compiler = yara_x.Compiler()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                compiler.add_source(f.read(), origin=path)
        except OSError as exc:
            raise ValueError(f"{path}: cannot read YARA rules: {exc.strerror}") from exc
        except yara_x.CompileError as exc:
            raise ValueError(f"{path}: invalid YARA rules: {exc}") from exc
    return compiler.build()


class ExecutableScanner:
    """Scans executables off the caller's thread; verdicts come back through `results()`."""

    def __init__(self, rules: yara_x.Rules, known_sha256: Iterable[str], *, max_bytes: int,
                 timeout_s: int, cache_entries: int, queue_size: int,
                 open_executable: OpenExecutable = open_process_executable,
                 peek: PeekExecutable = peek_executable) -> None:
        self.rules = rules
        self.known_sha256 = frozenset(h.lower() for h in known_sha256)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.cache_entries = cache_entries
        self.open_executable = open_executable
        self.peek = peek
        self._cache_lock = threading.Lock()  # the cache is read on the caller's thread too
        self.dropped = 0
        self.scanned = 0
        self.cache_hits = 0
        self._cache: OrderedDict[FileKey, ScanVerdict] = OrderedDict()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._done: deque = deque()
        self._gone: deque = deque()  # (event, until): see GONE_RECHECK_S
        self._worker: Optional[threading.Thread] = None
        # Called on the scanning thread after each verdict it adds to results().
        self.on_result: Optional[Callable[[], None]] = None
        # image_holder(pid): the live process running the image that pid exec'd (itself, or
        # the daemon it forked before it exited), None when the agent saw them all exit, so
        # /proc has nothing left of it. An exec storm's processes are mostly gone by the time
        # detection sees their exec: asking saves a failed open and two exceptions per exec
        # (a tenth of its detection); a miner that daemonizes is scanned through its child.
        self.image_holder: Optional[Callable[[int], Optional[int]]] = None

    def submit(self, event: Event) -> bool:
        """Queue an exec for scanning; False (and counted) when the queue is full."""
        target = self._target(event)
        if target is None:
            return True  # the process and its forks exited already: no file left to scan
        try:
            key = self.peek(target)
        except ExecutableGone:
            self._note_gone(event, target)
            return True
        cached = self._cached(key) if key is not None else None
        if cached is not None:
            self._done.append((event, cached))
            return True
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="ebpfguard-exescan", daemon=True)
            self._worker.start()
        try:
            self._queue.put_nowait((event, target))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def running_pid(self, event: Event) -> Optional[int]:
        """The pid running the exec's image now, as the process table knows it: the exec's
        own, or the child a daemon left running; None once the table saw them all exit.
        Without the table (or without an integer pid), the event's own pid."""
        pid = (event.get("process") or {}).get("pid")
        if self.image_holder is None or not isinstance(pid, int):
            return pid
        return self.image_holder(pid)

    def _target(self, event: Event) -> Optional[Event]:
        """The event whose process's executable to open: the event itself, or a copy naming
        the live process that holds its image now; None when there is none."""
        process = event.get("process") or {}
        running = self.running_pid(event)
        if running == process.get("pid"):
            return event
        return None if running is None else {**event, "process": {**process, "pid": running}}

    def _note_gone(self, event: Event, target: Event) -> None:
        """The process to open had left /proc: when that was the exec's own process, as far as
        the process table knew, ask the table again later (`retry_gone`)."""
        if self.image_holder is not None and target is event and len(self._gone) < MAX_GONE:
            self._gone.append((event, time.monotonic() + GONE_RECHECK_S))

    def awaits_retry(self) -> bool:
        """Whether execs wait for `retry_gone` (until the table catches up, or for
        GONE_RECHECK_S). Only reads: safe from any thread."""
        return bool(self._gone)

    def retry_gone(self) -> None:
        """Submit again the execs whose process left /proc before the table knew it exited,
        now that it knows of a child running the image (a daemon); drop those it saw exit
        alone, and those it has not caught up on within GONE_RECHECK_S. Call it between
        events, on the thread that submits."""
        if self.image_holder is None:
            return
        now = time.monotonic()
        for _ in range(len(self._gone)):
            event, until = self._gone.popleft()
            running = self.running_pid(event)
            if running == (event.get("process") or {}).get("pid"):  # the table has not read the exit yet
                if now < until:
                    self._gone.append((event, until))
            elif running is not None:
                self.submit(event)  # through the child

    def results(self) -> list[tuple[Event, ScanVerdict]]:
        """Verdicts finished since the last call (non-blocking)."""
        out = []
        while self._done:
            out.append(self._done.popleft())
        return out

    def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Block until every queued scan is done (tests and benchmarks)."""
        if timeout is None:
            self._queue.join()
            return
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        done.wait(timeout)

    def _run(self) -> None:
        run_this_thread_as_normal()  # started by the main loop, which may be a batch task
        while True:
            event, target = self._queue.get()
            try:
                verdict = self.verdict_for(target)
                if verdict is not None:
                    self._done.append((event, verdict))
                    if self.on_result is not None:
                        self.on_result()
                else:  # not opened: gone, as far as the table knew, is asked about again
                    self._note_gone(event, target)
            except Exception:  # noqa: BLE001 - one odd file must not stop the worker
                log.exception("executable scan failed")
            finally:
                self._queue.task_done()

    def verdict_for(self, event: Event) -> Optional[ScanVerdict]:
        """The verdict on the event's executable (cached), or None if it cannot be opened."""
        descriptor = self.open_executable(event)
        if descriptor is None:
            return None
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                return None
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            cached = self._cached(key)
            if cached is not None:
                return cached
            verdict = self._scan(_read_up_to(descriptor, self.max_bytes), info.st_size)
        finally:
            os.close(descriptor)
        self.scanned += 1
        if verdict.timed_out:  # not a verdict: the next exec of this file tries again
            return verdict
        with self._cache_lock:
            self._cache[key] = verdict
            if len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
        return verdict

    def _cached(self, key: FileKey) -> Optional[ScanVerdict]:
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.cache_hits += 1
            return cached

    def _scan(self, data: bytes, size: int) -> ScanVerdict:
        sha256 = hashlib.sha256(data).hexdigest() if len(data) == size else None
        scanner = yara_x.Scanner(self.rules)
        scanner.set_timeout(self.timeout_s)
        timed_out = False
        try:
            matched = tuple(rule.identifier for rule in scanner.scan(data).matching_rules)
        except yara_x.TimeoutError:
            matched, timed_out = (), True
        return ScanVerdict(rules=matched, sha256=sha256, known_release=sha256 in self.known_sha256,
                           scanned_bytes=len(data), size=size, timed_out=timed_out)


def _read_up_to(descriptor: int, max_bytes: int) -> bytes:
    chunks, remaining = [], max_bytes
    while remaining > 0:
        chunk = os.read(descriptor, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
