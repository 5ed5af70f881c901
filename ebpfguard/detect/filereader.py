"""Reading a file the way a watched process would open it, without letting it trap the agent.

The one file reader detectors use (a miner's `-c config.json`, ssh's `-F file` and
`~/.ssh/config`, and for other detectors an executable's first bytes):

    reader.read(pid, path, limit) -> ReadResult(data or None, why, truncated)

`ProcessRootReader` resolves `path` inside the process's own root with
`openat2(RESOLVE_IN_ROOT)`: symlinks and `..` are followed as the kernel follows them for that
process, and never lead out of its root (a link to `/etc/shadow` is the sandbox's
`/etc/shadow`). A relative path starts at the process's working directory. The file is first
opened O_PATH (no open of a device or FIFO ever happens: opening some devices has effects),
checked with fstat to be a regular file, and only then opened for reading through that
descriptor, O_NONBLOCK|O_NOCTTY, at most `limit` bytes.

The sandbox controls the file system underneath (a FUSE file can block forever), so live
reads run on `TimedReader`'s worker threads with a time limit per read; `ExecFiles` is what
detectors call, and adds a time budget per event (all the reads of one exec together). What
was not read says why (`missing`, `not a regular file`, `timed out`, ...): a config that
vanished or could not be read is evidence, not silence. Replay passes no reader: it reads no
host files.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import stat
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol

DEFAULT_LIMIT = 256 * 1024

# openat2(2): struct open_how {u64 flags; u64 mode; u64 resolve}; the syscall number is
# 437 on every architecture that has it (x86-64 and aarch64 included).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
O_PATH = getattr(os, "O_PATH", 0o10000000)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class ReadResult:
    """A read's outcome: `data` (None when nothing could be read) and, if so, `why`."""

    data: Optional[bytes]
    why: str = ""
    truncated: bool = False

    def as_evidence(self) -> str:
        return "read" if self.data is not None else self.why


class FileReader(Protocol):
    """Reads `path` as process `pid` would open it; never raises for a file it cannot read."""

    def read(self, pid: int, path: str, limit: int = DEFAULT_LIMIT) -> ReadResult: ...


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """The openat2 syscall; a file descriptor, or OSError."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


_WHY = {
    errno.ENOENT: "missing",
    errno.ENOTDIR: "missing",
    errno.ELOOP: "symlink loop or magic link",
    errno.EXDEV: "leaves the process's root",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "path too long",
    errno.ENOSYS: "openat2 not supported by this kernel",
    errno.EAGAIN: "would block",
}


class ProcessRootReader:
    """Reads files inside a process's root (`/proc/<pid>/root`), as the kernel would for it."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root

    def read(self, pid: int, path: str, limit: int = DEFAULT_LIMIT) -> ReadResult:
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return ReadResult(None, "no process")
        if not isinstance(path, str) or not path or "\0" in path:
            return ReadResult(None, "not a path")
        descriptors: list[int] = []
        try:
            base = f"{self.proc_root}/{pid}"
            root = _keep(descriptors, os.open(f"{base}/root", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            start, relative = root, path
            if not path.startswith("/"):
                cwd = self._cwd_in_root(base)
                if cwd is not None:
                    relative = f"{cwd}/{path}"
                else:
                    # A working directory outside the root: it is the root the path can see.
                    start = _keep(descriptors, os.open(f"{base}/cwd", O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            found = _keep(descriptors, openat2(start, relative, O_PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS))
            if not stat.S_ISREG(os.fstat(found).st_mode):
                return ReadResult(None, "not a regular file")
            # Reopened through the O_PATH descriptor: the same inode that was checked.
            readable = _keep(descriptors, os.open(f"/proc/self/fd/{found}", os.O_RDONLY | os.O_NONBLOCK
                                                  | os.O_NOCTTY | os.O_CLOEXEC))
            return _read_up_to(readable, limit)
        except OSError as exc:
            if exc.filename is not None and str(exc.filename).startswith(f"{self.proc_root}/{pid}/"):
                return ReadResult(None, "process gone")
            return ReadResult(None, _WHY.get(exc.errno or 0, f"error: {os.strerror(exc.errno or 0)}"))
        finally:
            for descriptor in descriptors:
                os.close(descriptor)

    def _cwd_in_root(self, base: str) -> Optional[str]:
        """The working directory as a path inside the process's root; None when not one."""
        root, cwd = os.readlink(f"{base}/root"), os.readlink(f"{base}/cwd")
        if cwd.endswith(" (deleted)") or not cwd.startswith("/"):
            return None
        if root == "/":
            return cwd
        if cwd == root:
            return "/"
        return cwd[len(root):] if cwd.startswith(root + "/") else None


def _keep(descriptors: list[int], descriptor: int) -> int:
    descriptors.append(descriptor)
    return descriptor


def _read_up_to(descriptor: int, limit: int) -> ReadResult:
    chunks, remaining = [], limit
    while remaining > 0:
        chunk = os.read(descriptor, min(remaining, 65536))
        if not chunk:
            return ReadResult(b"".join(chunks))
        chunks.append(chunk)
        remaining -= len(chunk)
    more = os.read(descriptor, 1)
    return ReadResult(b"".join(chunks), f"truncated at {limit} bytes" if more else "", truncated=bool(more))


class TimedReader:
    """A FileReader whose reads run on a few daemon worker threads, each with a time limit.

    A read that hangs (a FUSE file that never answers) keeps its worker; once every worker is
    held, reads are refused at once (`busy`) instead of queueing behind it. Daemon threads, so
    a read stuck in the kernel never holds up the agent's exit.
    """

    def __init__(self, reader: FileReader, workers: int = 4, timeout_s: float = 0.1,
                 on_timeout: Callable[[], None] = lambda: None) -> None:
        self.reader = reader
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(workers)
        for number in range(workers):
            threading.Thread(target=self._work, name=f"ebpfguard-read-{number}", daemon=True).start()

    def _work(self) -> None:
        while True:
            future, pid, path, limit = self._jobs.get()
            try:
                future.set_result(self.reader.read(pid, path, limit))
            except Exception as exc:  # noqa: BLE001 - the reader's bug is this read's outcome
                future.set_result(ReadResult(None, f"error: {type(exc).__name__}"))
            finally:
                self._idle.release()

    def read(self, pid: int, path: str, limit: int = DEFAULT_LIMIT, timeout_s: Optional[float] = None) -> ReadResult:
        if not self._idle.acquire(blocking=False):
            self.on_timeout()
            return ReadResult(None, "busy: earlier reads have not returned")
        future: Future = Future()
        self._jobs.put((future, pid, path, limit))
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        try:
            return future.result(timeout=wait_s)
        except FutureTimeout:
            self.on_timeout()
            return ReadResult(None, f"timed out after {wait_s * 1000:.0f} ms")


class ExecFiles:
    """What detectors call: `(event, path) -> ReadResult`, within a time budget per event.

    Every detector reading files for one event shares its budget (the engine hands each
    detector the same event object, which is how a new event is told apart).
    """

    def __init__(self, reader: TimedReader, budget_s: float, limit: int = DEFAULT_LIMIT,
                 on_budget_spent: Callable[[], None] = lambda: None) -> None:
        self.reader = reader
        self.budget_s = budget_s
        self.limit = limit
        self.on_budget_spent = on_budget_spent
        self._event: Optional[Mapping[str, Any]] = None
        self._deadline = 0.0

    def __call__(self, event: Mapping[str, Any], path: str) -> ReadResult:
        now = time.monotonic()
        if event is not self._event:
            self._event, self._deadline = event, now + self.budget_s
        remaining = self._deadline - now
        if remaining <= 0:
            self.on_budget_spent()
            return ReadResult(None, "not read: this exec's read budget is spent")
        pid = (event.get("process") or {}).get("pid")
        return self.reader.read(pid, path, self.limit, timeout_s=min(self.reader.timeout_s, remaining))


def live_files(limits: Mapping[str, Any], count_overrun: Callable[[str], None]) -> ExecFiles:
    """The live agent's reader, from the config's `limits` (overruns counted by stage)."""
    reader = TimedReader(ProcessRootReader(), timeout_s=limits["file_read_timeout_ms"] / 1000,
                         on_timeout=lambda: count_overrun("file_read"))
    return ExecFiles(reader, limits["exec_files_budget_ms"] / 1000, limits["file_read_bytes"],
                     on_budget_spent=lambda: count_overrun("exec_files"))
