"""The process table: who is whose parent, for `ppid` and `ancestry`.

Fed by fork, exec and exit events from the kernel and seeded from /proc at start-up. Bounded
(LRU) in entries and in command-line bytes, so that pid churn and long command lines keep
memory flat; what it cannot know is reported, never guessed.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CLONE_PARENT = 0x00008000
# Generations of forks followed from an exited process to the live one still running its
# image: a daemon forks once (XMRig's --background) or twice (fork, setsid, fork).
MAX_DAEMON_FORKS = 4
# Lineages remembered at once (each holds a list of its ancestors): a storm needs its
# parents' and the last few children's.
MAX_LINEAGES = 4096


# Slotted, not frozen: one is built per fork and exec (see kernel/events.py's records).
@dataclass(slots=True)
class ProcessInfo:
    pid: int
    ppid: Optional[int]
    comm: str
    exe: Optional[str]
    argv: Optional[tuple[str, ...]] = None
    exited: bool = False
    # Set by a fork: the parent whose image this process still runs (None once it execs).
    image_from: Optional[int] = None
    last_child: Optional[int] = None  # the last process this one forked


@dataclass(slots=True)
class Lineage:
    ppid: Optional[int]
    ancestry: list[dict]
    complete: bool


class SharedValues:
    """One copy of each recurring value (a command line, an executable path, a comm) for
    the table's entries: a storm of the same command would otherwise keep a copy of its
    strings per pid. Remembers at most `capacity` distinct values, then starts afresh."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._values: dict = {}

    def __call__(self, value):
        kept = self._values.get(value)
        if kept is not None:
            return kept
        if len(self._values) >= self.capacity:
            self._values.clear()
        self._values[value] = value
        return value


def argv_cost(argv: Optional[tuple[str, ...]]) -> int:
    """What a command line counts against the table's byte bound: its characters, and a
    pointer's worth per argument."""
    return sum(map(len, argv)) + 8 * len(argv) if argv else 0


class ProcessTable:
    """pid -> ProcessInfo, least recently used evicted past `max_processes` entries or past
    `max_argv_bytes` of command lines (each distinct command line counted once)."""

    def __init__(self, max_processes: int = 65536, ancestry_depth: int = 16, proc_root: str = "/proc",
                 max_argv_bytes: int = 16 << 20) -> None:
        self.max_processes = max_processes
        self.max_argv_bytes = max_argv_bytes
        self.ancestry_depth = ancestry_depth
        self.proc_root = proc_root
        self._procs: OrderedDict[int, ProcessInfo] = OrderedDict()
        self._share = SharedValues()
        # id(argv) -> [entries holding that very tuple, its cost]: the table holds each
        # tuple while it counts it, so its id stays its own.
        self._argvs: dict[int, list[int]] = {}
        self.argv_bytes = 0
        # lineage() answers, valid while no process they were read from is added, changed or
        # evicted: a connect storm asks for the same few lineages thousands of times, and an
        # exec storm's children share their parent's. `_read_by` holds every pid an answer
        # was read from (the process, its ancestors, the missing parent it stopped at); a put
        # of any of those forgets every answer, a put of another pid (a new child) none.
        self._lineages: dict[int, Lineage] = {}
        self._read_by: set[int] = set()

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, pid: int) -> Optional[ProcessInfo]:
        info = self._procs.get(pid)
        if info is not None:
            self._procs.move_to_end(pid)
        return info

    def put(self, info: ProcessInfo) -> None:
        procs = self._procs
        pid = info.pid
        if pid in self._read_by:
            self._forget_lineages()
        old = procs.get(pid)
        if old is not None:
            self._release(old.argv)
            procs.move_to_end(pid)
        if info.argv is not None:
            self._hold(info.argv)
        procs[pid] = info
        while len(procs) > self.max_processes or (self.argv_bytes > self.max_argv_bytes and len(procs) > 1):
            evicted, gone = procs.popitem(last=False)
            if evicted in self._read_by:
                self._forget_lineages()
            self._release(gone.argv)

    def _forget_lineages(self) -> None:
        self._lineages.clear()
        self._read_by.clear()

    def _hold(self, argv: Optional[tuple[str, ...]]) -> None:
        if argv is None:
            return
        held = self._argvs.get(id(argv))
        if held is None:
            held = self._argvs[id(argv)] = [0, argv_cost(argv)]
            self.argv_bytes += held[1]
        held[0] += 1

    def _release(self, argv: Optional[tuple[str, ...]]) -> None:
        if argv is None:
            return
        held = self._argvs[id(argv)]
        held[0] -= 1
        if held[0] == 0:
            del self._argvs[id(argv)]
            self.argv_bytes -= held[1]

    def seed_from_proc(self) -> int:
        """Load every process now in /proc; returns how many were read."""
        count = 0
        try:
            names = os.listdir(self.proc_root)
        except OSError:
            return 0
        for name in names:
            if name.isdigit():
                info = read_proc_process(self.proc_root, int(name))
                if info:
                    self.put(info)
                    count += 1
        return count

    def on_fork(self, parent_pid: int, child_pid: int, clone_flags: int, comm: str) -> None:
        parent = self.lookup(parent_pid)
        ppid = parent_pid
        if clone_flags & CLONE_PARENT and parent is not None:
            ppid = parent.ppid  # the child becomes its parent's sibling
        if parent is not None:
            parent.last_child = child_pid  # in place, like on_exit
        self.put(ProcessInfo(
            pid=child_pid,
            ppid=ppid,
            comm=self._share(comm),
            exe=parent.exe if parent else None,
            argv=parent.argv if parent else None,
            image_from=parent_pid,
        ))

    def on_exec(self, pid: int, comm: str, exe: Optional[str], argv: tuple[str, ...]) -> None:
        known = self.lookup(pid)
        ppid = known.ppid if known else None
        share = self._share
        self.put(ProcessInfo(pid=pid, ppid=ppid, comm=share(comm), exe=share(exe) if exe else exe, argv=share(argv)))

    def on_exit(self, pid: int) -> None:
        # Kept (marked) for events still in flight; the LRU bound retires it.
        known = self._procs.get(pid)
        if known is not None:
            known.exited = True  # in place: nothing a lineage or an event shows changes

    def image_holder(self, pid: int) -> Optional[int]:
        """A live process running the image `pid` exec'd: `pid` itself unless the table saw it
        exit; else the last child it forked, if that still runs the image (no exec since) and
        is not seen exiting, or that child's own (a double fork), up to MAX_DAEMON_FORKS
        generations; None when none is known. A daemon's parent exits at once, before its
        exec reaches detection. Safe from any thread: it neither reads /proc nor reorders the
        table."""
        for _ in range(MAX_DAEMON_FORKS + 1):
            info = self._procs.get(pid)
            if info is None or not info.exited:
                return pid
            child = self._procs.get(info.last_child) if info.last_child is not None else None
            if child is None or child.image_from != pid:
                return None  # no fork known, or its pid belongs to another process now
            pid = child.pid
        return None

    def lookup(self, pid: int) -> Optional[ProcessInfo]:
        """The table's entry, else what /proc says now (remembered), else None."""
        info = self.get(pid)
        if info is None and pid > 0:
            info = read_proc_process(self.proc_root, pid)
            if info is not None:
                self.put(info)
        return info

    def exe_of(self, pid: int, filename: str) -> Optional[str]:
        """The executable a process runs: an absolute `filename` is what was executed; a
        relative one needs the process's own view, /proc/<pid>/exe."""
        if filename.startswith("/"):
            return filename
        try:
            return os.readlink(Path(self.proc_root, str(pid), "exe"))
        except OSError:
            return None

    def read_cmdline(self, pid: int) -> Optional[tuple[bytes, ...]]:
        """A process's argv as /proc shows it now (see read_cmdline)."""
        return read_cmdline(self.proc_root, pid)

    def lineage(self, pid: int) -> Lineage:
        """ppid and ancestry (nearest parent first, up to pid 1 or the depth bound)."""
        cached = self._lineages.get(pid)
        if cached is None:
            if len(self._lineages) >= MAX_LINEAGES:
                self._forget_lineages()
            cached = self._from_parent(pid) or self._walk_lineage(pid)
            self._lineages[pid] = cached
        return cached

    def _from_parent(self, pid: int) -> Optional[Lineage]:
        """The lineage as the walk would find it, from the parent's (remembered for the next
        child): the parent in front, cut at the depth bound. None when the walk could end
        otherwise (the parent is not in the table or has no known ppid, the process is its
        own ancestor)."""
        me = self._procs.get(pid)
        if me is None or not me.ppid or me.ppid == pid:
            return None
        ppid = me.ppid
        procs = self._procs
        if ppid not in procs:
            return None
        procs.move_to_end(pid)
        above = self._lineages.get(ppid)
        if above is None:
            # Its children will ask again (a storm's parent forks thousands): remembered.
            above = self._lineages[ppid] = self._walk_lineage(ppid)
            if procs.get(pid) is not me or ppid not in procs:  # the walk read /proc and evicted
                return None
        if above.ppid is None or any(parent["pid"] == pid for parent in above.ancestry):
            return None
        ancestry = above.ancestry
        for parent in ancestry:  # the walk would have looked each one up: keep them as recent
            procs.move_to_end(parent["pid"])
        parent = procs[ppid]
        procs.move_to_end(ppid)
        self._read_by.add(pid)
        chain = [{"pid": ppid, "comm": parent.comm, "exe": parent.exe}]
        chain += ancestry
        if len(chain) > self.ancestry_depth:
            return Lineage(ppid, chain[: self.ancestry_depth], False)
        return Lineage(ppid, chain, above.complete)

    def _walk_lineage(self, pid: int) -> Lineage:
        # The pids read are noted once the walk is done: a lookup that reads /proc puts, and
        # may evict, on the way.
        me = self.lookup(pid)
        if me is None or me.ppid is None:
            self._read_by.add(pid)
            return Lineage(None, [], False)
        ancestry: list[dict] = []
        seen = {pid}
        ppid = me.ppid
        complete = True
        while ppid and ppid not in seen:
            if len(ancestry) >= self.ancestry_depth:
                complete = False
                break
            parent = self.lookup(ppid)
            seen.add(ppid)
            if parent is None:
                complete = False
                break
            ancestry.append({"pid": parent.pid, "comm": parent.comm, "exe": parent.exe})
            ppid = parent.ppid
        self._read_by.update(seen)
        return Lineage(me.ppid, ancestry, complete)


def read_proc_process(proc_root: str, pid: int) -> Optional[ProcessInfo]:
    """A process as /proc/<pid> describes it now, or None if it is gone or unreadable."""
    base = Path(proc_root, str(pid))
    try:
        stat = (base / "stat").read_bytes()
    except OSError:
        return None
    # comm may hold spaces and parentheses: it runs from the first '(' to the last ')'.
    lpar, rpar = stat.find(b"("), stat.rfind(b")")
    if lpar < 0 or rpar < 0:
        return None
    comm = stat[lpar + 1 : rpar].decode("utf-8", "backslashreplace")
    fields = stat[rpar + 2 :].split()
    try:
        ppid = int(fields[1])
    except (IndexError, ValueError):
        return None
    try:
        exe: Optional[str] = os.readlink(base / "exe")
    except OSError:
        exe = None
    raw_argv = read_cmdline(proc_root, pid)
    argv = tuple(a.decode("utf-8", "backslashreplace") for a in raw_argv) if raw_argv else None
    return ProcessInfo(pid=pid, ppid=ppid, comm=comm, exe=exe, argv=argv)


def read_cmdline(proc_root: str, pid: int, limit: int = 1 << 16) -> Optional[tuple[bytes, ...]]:
    """A process's argv as /proc shows it now (its first `limit` bytes), or None when it is
    gone or has none (a kernel thread, a zombie)."""
    try:
        with open(Path(proc_root, str(pid), "cmdline"), "rb") as f:
            raw = f.read(limit)
    except OSError:
        return None
    return tuple(raw.split(b"\0")[:-1]) or None
