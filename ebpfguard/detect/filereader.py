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

The sandbox controls the file system underneath (a FUSE file can block forever), so a read
that could wait on anyone runs on one of `TimedReader`'s worker threads, with a time limit.
Handing a read to a thread and back costs more than the read (two thread switches, ~40 us of
CPU against ~10 us), so a read that provably cannot wait is done on the caller's thread
(`read_quick`): its path resolved from the dentry cache alone (`RESOLVE_CACHED`: the walk
never sleeps, or fails EAGAIN), to a regular file on a local file system (ext2/3/4, tmpfs)
mounted in the agent's own mount namespace, where opening O_NONBLOCK and reading waits on no
lock a sandbox can hold and on no server. Everything else (a file the cache does not hold,
FUSE, NFS, overlay, another mount namespace) takes the worker. `ExecFiles` is what detectors
call, and adds a time budget per event (all the reads of one exec together). What was not
read says why (`missing`, `not a regular file`, `timed out`, ...): a config that vanished or
could not be read is evidence, not silence. Replay passes no reader: it reads no host files.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import queue
import select
import stat
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol

DEFAULT_LIMIT = 256 * 1024

# openat2(2): struct open_how {u64 flags; u64 mode; u64 resolve}; the syscall number is
# 437 on every architecture that has it (x86-64 and aarch64 included).
SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20
O_PATH = getattr(os, "O_PATH", 0o10000000)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_HOW_SIZE = ctypes.sizeof(_OpenHow)

# File systems whose regular files a read may open O_NONBLOCK and read without waiting on a
# lock a sandbox can hold or on a server (a buffered read takes no inode lock here; XFS's
# does, and a writer faulting on a FUSE page while holding it would hold the read too).
QUICK_FSTYPES = frozenset({"ext2", "ext3", "ext4", "tmpfs"})


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
    fd = _libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), _HOW_SIZE)
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


class QuickReadUnsafe(Exception):
    """This read might wait (a dentry not cached, a file system that can block): take a worker."""


class MountTable:
    """Mount id -> file system type, of the agent's own mount namespace, kept current.

    `/proc/self/mountinfo` polls POLLPRI once the namespace's mounts change, so checking costs
    one poll(2) and the table is read again only then. A mount id seen here is the mount a
    descriptor that holds it names: ids are not reused while a mount is referenced.
    """

    def __init__(self, mountinfo: str = "/proc/self/mountinfo") -> None:
        self._descriptor = os.open(mountinfo, os.O_RDONLY | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._descriptor, select.POLLPRI | select.POLLERR)
        self._lock = threading.Lock()
        self._types = self._read()

    def _read(self) -> dict[int, str]:
        os.lseek(self._descriptor, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._descriptor, 65536):
            chunks.append(chunk)
        types = {}
        for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
            fields, _, after = line.partition(" - ")
            if after:
                types[int(fields.split(" ", 1)[0])] = after.split(" ", 1)[0]
        return types

    def fstype(self, mount_id: int) -> Optional[str]:
        """The type of the mount with this id in the agent's namespace; None if not in it."""
        with self._lock:
            if self._poll.poll(0):
                self._types = self._read()
            return self._types.get(mount_id)


class ProcessRootReader:
    """Reads files inside a process's root (`/proc/<pid>/root`), as the kernel would for it."""

    def __init__(self, proc_root: str = "/proc", mounts: Optional[MountTable] = None) -> None:
        self.proc_root = proc_root
        self._mounts = mounts

    def read(self, pid: int, path: str, limit: int = DEFAULT_LIMIT) -> ReadResult:
        result = self._read(pid, path, limit, quick=False)
        assert result is not None
        return result

    def read_quick(self, pid: int, path: str, limit: int = DEFAULT_LIMIT) -> Optional[ReadResult]:
        """As `read`, if that cannot wait on anything (see the module's doc); else None."""
        return self._read(pid, path, limit, quick=True)

    def _read(self, pid: int, path: str, limit: int, quick: bool) -> Optional[ReadResult]:
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
            resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | (RESOLVE_CACHED if quick else 0)
            try:
                found = _keep(descriptors, openat2(start, relative, O_PATH, resolve))
            except OSError as exc:
                if quick and exc.errno == errno.EAGAIN:
                    raise QuickReadUnsafe() from None
                raise
            # The mount is checked before anything asks the file system about the file (a
            # FUSE server would be asked for its attributes).
            if quick and self._fstype(found) not in QUICK_FSTYPES:
                raise QuickReadUnsafe()
            if not stat.S_ISREG(os.fstat(found).st_mode):
                return ReadResult(None, "not a regular file")
            # Reopened through the O_PATH descriptor: the same inode that was checked.
            readable = _keep(descriptors, os.open(f"/proc/self/fd/{found}", os.O_RDONLY | os.O_NONBLOCK
                                                  | os.O_NOCTTY | os.O_CLOEXEC))
            return _read_up_to(readable, limit)
        except QuickReadUnsafe:
            return None
        except OSError as exc:
            if exc.filename is not None and str(exc.filename).startswith(f"{self.proc_root}/{pid}/"):
                return ReadResult(None, "process gone")
            return ReadResult(None, _WHY.get(exc.errno or 0, f"error: {os.strerror(exc.errno or 0)}"))
        finally:
            for descriptor in descriptors:
                os.close(descriptor)

    def _fstype(self, descriptor: int) -> Optional[str]:
        return local_fstype(descriptor, self._mounts)

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


@functools.lru_cache(maxsize=None)
def agent_mounts() -> MountTable:
    """The agent's own mount table, one for every reader (an OSError is not kept: tried again)."""
    return MountTable()


def local_fstype(descriptor: int, mounts: Optional[MountTable] = None) -> Optional[str]:
    """The type of the file system a descriptor (O_PATH will do) is on, if it is mounted in the
    agent's own namespace; None when not, or when that cannot be told. Asks nothing of the
    file system itself."""
    try:
        return (mounts or agent_mounts()).fstype(_mount_id(descriptor))
    except (OSError, ValueError):
        return None


def _mount_id(descriptor: int) -> int:
    """The id of the mount a descriptor is on, from procfs (asks nothing of the file system)."""
    info = os.open(f"/proc/self/fdinfo/{descriptor}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(info, 4096)
    finally:
        os.close(info)
    start = text.index(b"mnt_id:") + 7
    return int(text[start:text.index(b"\n", start)])


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
    """A FileReader whose reads that could wait run on a few daemon worker threads, each with a
    time limit; the reader's `read_quick`, when it has one, answers the rest on the caller's thread.

    A read that hangs (a FUSE file that never answers) keeps its worker; once every worker is
    held, reads are refused at once (`busy`) instead of queueing behind it. Daemon threads, so
    a read stuck in the kernel never holds up the agent's exit. The hand-over is a queue put
    and a lock per read (no Future, no Condition: those cost more than the read itself).
    """

    def __init__(self, reader: FileReader, workers: int = 4, timeout_s: float = 0.1,
                 on_timeout: Callable[[], None] = lambda: None) -> None:
        self.reader = reader
        self.timeout_s = timeout_s
        self.on_timeout = on_timeout
        self._quick: Optional[Callable[[int, str, int], Optional[ReadResult]]] = getattr(reader, "read_quick", None)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = workers
        self._held = 0  # workers given a read that has not returned
        self._held_lock = threading.Lock()
        for number in range(workers):
            threading.Thread(target=self._work, name=f"ebpfguard-read-{number}", daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            _, pid, path, limit, done = job
            try:
                job[0] = self.reader.read(pid, path, limit)
            except Exception as exc:  # noqa: BLE001 - the reader's bug is this read's outcome
                job[0] = ReadResult(None, f"error: {type(exc).__name__}")
            finally:
                with self._held_lock:
                    self._held -= 1
                done.release()

    def read(self, pid: int, path: str, limit: int = DEFAULT_LIMIT, timeout_s: Optional[float] = None) -> ReadResult:
        wait_s = self.timeout_s if timeout_s is None else timeout_s
        if self._quick is not None:
            started = time.monotonic()
            try:
                result = self._quick(pid, path, limit)
            except Exception as exc:  # noqa: BLE001 - as on a worker: the reader's bug is this read's outcome
                result = ReadResult(None, f"error: {type(exc).__name__}")
            if result is not None:
                if time.monotonic() - started > wait_s:
                    self.on_timeout()  # a local disk this slow: done, but counted
                return result
        with self._held_lock:
            busy = self._held >= self._workers
            if not busy:
                self._held += 1
        if busy:
            self.on_timeout()
            return ReadResult(None, "busy: earlier reads have not returned")
        done = threading.Lock()
        done.acquire()
        job = [None, pid, path, limit, done]  # the worker puts the result in job[0]
        self._jobs.put(job)
        if done.acquire(timeout=wait_s):
            return job[0]
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
