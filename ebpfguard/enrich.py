"""Enrichment: a decoded kernel record becomes a schema event (design.md), with its time,
node, sandbox (from the cgroup id) and process (pid, ppid, ancestry from the process table).
"""

from __future__ import annotations

import base64
import os
import time
from typing import Mapping, Optional

from ebpfguard.events import ExecRecord, ExitRecord, ForkRecord, Header
from ebpfguard.proctable import ProcessTable
from ebpfguard.sandbox import CgroupIndex, resolve_sandbox


def rfc3339_ns(epoch_ns: int) -> str:
    """RFC 3339 UTC time with nanoseconds, e.g. 2026-11-27T20:29:38.123456789Z."""
    sec, frac = divmod(epoch_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


class BootClock:
    """Maps the kernel's boot-time nanoseconds (bpf_ktime_get_boot_ns) to wall-clock time."""

    def __init__(self) -> None:
        self.resync()

    def resync(self) -> None:
        self.offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def wall_ns(self, ktime_ns: int) -> int:
        return ktime_ns + self.offset_ns

    @staticmethod
    def now_ktime_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def text(raw: bytes) -> str:
    """Bytes a process controls, as a string: UTF-8 with invalid bytes as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


def argv_fields(argv: tuple[bytes, ...]) -> dict:
    """`argv` as strings, plus `argv_b64` (each element's exact bytes) when any element is
    not valid UTF-8, so the escaped form never hides what was really passed."""
    out: dict = {"argv": [text(a) for a in argv]}
    try:
        for a in argv:
            a.decode("utf-8")
    except UnicodeDecodeError:
        out["argv_b64"] = [base64.b64encode(a).decode("ascii") for a in argv]
    return out


class Enricher:
    """Turns records into events; keeps the process table current as it goes."""

    def __init__(self, node: str, procs: ProcessTable, cgroups: CgroupIndex,
                 sandbox_settings: Mapping, clock: BootClock) -> None:
        self.node = node
        self.procs = procs
        self.cgroups = cgroups
        self.sandbox_settings = sandbox_settings
        self.clock = clock

    def on_fork(self, rec: ForkRecord) -> None:
        self.procs.on_fork(rec.hdr.pid, rec.child_pid, rec.clone_flags, text(rec.hdr.comm))

    def exec_event(self, rec: ExecRecord) -> dict:
        comm = text(rec.hdr.comm)
        argv = argv_fields(rec.argv)
        filename = text(rec.filename)
        exe = None
        if rec.retval == 0:
            exe = _exe_of(rec.hdr.pid, filename)
            self.procs.on_exec(rec.hdr.pid, comm, exe, tuple(argv["argv"]))
        else:
            known = self.procs.lookup(rec.hdr.pid)
            exe = known.exe if known else None
        event = self._base("exec", rec.hdr, comm, exe, argv, rec.argv_truncated)
        event["filename"] = filename
        event["retval"] = rec.retval
        return event

    def exit_event(self, rec: ExitRecord) -> dict:
        known = self.procs.lookup(rec.hdr.pid)
        argv = {"argv": list(known.argv)} if known and known.argv is not None else None
        event = self._base("exit", rec.hdr, text(rec.hdr.comm), known.exe if known else None, argv, False)
        event["exit_code"] = rec.exit_code
        self.procs.on_exit(rec.hdr.pid)
        return event

    def _base(self, kind: str, hdr: Header, comm: str, exe: Optional[str],
              argv: Optional[dict], argv_truncated: bool) -> dict:
        partial = []
        sandbox, known = resolve_sandbox(self.cgroups, hdr.cgroup_id, self.sandbox_settings)
        if not known:
            partial.append("sandbox")
        lineage = self.procs.lineage(hdr.pid)
        if lineage.ppid is None:
            partial.append("ppid")
        if not lineage.complete:
            partial.append("ancestry")
        if exe is None:
            partial.append("exe")
        process = {
            "pid": hdr.pid,
            "ppid": lineage.ppid,
            "uid": hdr.uid,
            "comm": comm,
            "exe": exe,
            "argv": argv["argv"] if argv else [],
            "argv_truncated": argv_truncated,
            "ancestry": lineage.ancestry,
        }
        if argv is None:
            partial.append("argv")
        elif "argv_b64" in argv:
            process["argv_b64"] = argv["argv_b64"]
        event = {
            "kind": kind,
            "time": rfc3339_ns(self.clock.wall_ns(hdr.ktime_ns)),
            "node": self.node,
            "sandbox": sandbox,
            "process": process,
        }
        if partial:
            event["partial"] = partial
        return event


def _exe_of(pid: int, filename: str) -> Optional[str]:
    # An absolute filename is what was executed; a relative one needs the process's view.
    if filename.startswith("/"):
        return filename
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
