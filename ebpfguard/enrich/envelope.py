"""What every event carries (design.md): kind, time, node, sandbox and process.

Each part of the enricher builds its own fields on top of this envelope.
"""

from __future__ import annotations

from typing import Optional

from ebpfguard.clock import BootClock, rfc3339_ns
from ebpfguard.enrich.fields import text
from ebpfguard.enrich.lineage import lineage_sandbox
from ebpfguard.enrich.proctable import Lineage, ProcessTable
from ebpfguard.enrich.sandbox_cache import SandboxCache
from ebpfguard.kernel.events import Header


# Processes whose `process` object is kept for their next event (a few hundred KiB at most).
MAX_CACHED_PROCESSES = 1024


class EventEnvelope:
    """Builds the common part of an event from a record header and the process table."""

    def __init__(self, node: str, procs: ProcessTable, sandboxes: SandboxCache, clock: BootClock) -> None:
        self.node = node
        self.procs = procs
        self.sandboxes = sandboxes
        self.clock = clock
        # pid -> the `process` object and its `partial` entries as about_process last built
        # them, with what they were built from: a storm of connects from one process builds
        # them once. Forgotten at the process's exit; all of it once it holds too many.
        self._processes: dict[int, tuple] = {}

    def about_process(self, kind: str, hdr: Header) -> dict:
        """An event about a process known from the table (anything but an exec)."""
        known = self.procs.lookup(hdr.pid)
        lineage = self.procs.lineage(hdr.pid)
        cached = self._processes.pop(hdr.pid, None) if kind == "exit" else self._processes.get(hdr.pid)
        # The table replaces a process's entry and its lineage when either changes, so the
        # same objects mean the same process fields.
        if (cached is not None and cached[0] is known and cached[1] is lineage
                and cached[2] == hdr.comm and cached[3] == hdr.uid):
            return self._event(kind, hdr, dict(cached[4]), list(cached[5]))
        argv = {"argv": list(known.argv)} if known and known.argv is not None else None
        process, partial = self._process(hdr, lineage, text(hdr.comm), known.exe if known else None, argv, False)
        if kind != "exit":
            if len(self._processes) >= MAX_CACHED_PROCESSES:
                self._processes.clear()
            self._processes[hdr.pid] = (known, lineage, hdr.comm, hdr.uid, dict(process), list(partial))
        return self._event(kind, hdr, process, partial)

    def sandbox_of(self, hdr: Header) -> tuple[dict, bool]:
        """The sandbox of the process a record is about, and whether its cgroup could be
        resolved: its lineage sandbox wherever it is now (docs/lineage.md)."""
        sandbox, known = self.sandboxes.sandbox_of(hdr.cgroup_id)
        if hdr.lineage_cgroup_id and hdr.lineage_cgroup_id != hdr.cgroup_id:
            lineage, lineage_known = self.sandboxes.sandbox_of(hdr.lineage_cgroup_id)
            chosen = lineage_sandbox(sandbox, lineage)
            if chosen is not sandbox:
                return chosen, lineage_known
        return sandbox, known

    def base(self, kind: str, hdr: Header, comm: str, exe: Optional[str],
             argv: Optional[dict], argv_truncated: bool) -> dict:
        """The envelope, with what could not be known listed in `partial`."""
        process, partial = self._process(hdr, self.procs.lineage(hdr.pid), comm, exe, argv, argv_truncated)
        return self._event(kind, hdr, process, partial)

    def _process(self, hdr: Header, lineage: Lineage, comm: str, exe: Optional[str],
                 argv: Optional[dict], argv_truncated: bool) -> tuple[dict, list]:
        """The `process` object, and the `partial` entries its unknown fields make."""
        partial = []
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
        return process, partial

    def _event(self, kind: str, hdr: Header, process: dict, partial: list) -> dict:
        sandbox, known = self.sandbox_of(hdr)
        if not known:
            partial.insert(0, "sandbox")
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
