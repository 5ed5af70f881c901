"""Device events: opens of GPU and accelerator nodes (kernel), and GPU use per process (NVML)."""

from __future__ import annotations

import os
from typing import Optional

from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.fields import text
from ebpfguard.enrich.sandbox import CgroupIndex
from ebpfguard.kernel.events import Header, OpenRecord


class DeviceEvents:
    def __init__(self, envelope: EventEnvelope, cgroups: CgroupIndex) -> None:
        self.envelope = envelope
        self.cgroups = cgroups

    def open_event(self, rec: OpenRecord) -> dict:
        """An `open` event: a GPU or accelerator device node opened (or tried)."""
        event = self.envelope.about_process("open", rec.hdr)
        event["filename"] = text(rec.filename)
        event["flags"] = rec.flags
        event["retval"] = rec.retval
        return event

    def gpu_event(self, sample: dict, cgroup_path: Optional[str]) -> dict:
        """A `gpu` event from an NVML sample of one process: its sandbox comes from its
        cgroup path (NVML knows pids, not cgroup ids)."""
        pid = sample["pid"]
        known = self.envelope.procs.lookup(pid)
        cgroup_id = 0
        if cgroup_path is not None:
            try:
                cgroup_id = os.stat(self.cgroups.root + cgroup_path.rstrip("/")).st_ino
            except OSError:
                cgroup_path = None
        comm = known.comm if known else ""
        hdr = Header(self.envelope.clock.now_ktime_ns(), cgroup_id, pid, pid, 0, comm.encode())
        argv = {"argv": list(known.argv)} if known and known.argv is not None else None
        event = self.envelope.base("gpu", hdr, comm, known.exe if known else None, argv, False)
        event["process"]["uid"] = None
        if cgroup_path is None:
            event["sandbox"] = {"name": "unknown", "cgroup": None, "cgroup_id": None, "runtime": None}
        event.update({k: v for k, v in sample.items() if k != "pid"})
        return event
