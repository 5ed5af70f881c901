"""Enrichment: a decoded kernel record becomes a schema event (design.md), with its time,
node, sandbox (from the cgroup id) and process (pid, ppid, ancestry from the process table).

The work is done by one part per job, each with its environment passed in: the envelope
every event shares (envelope.py), the exec join (exec_join.py), network records
(network.py) and device records (devices.py). This class wires them and is what the agent's
dispatch table calls.
"""

from __future__ import annotations

import os
import sys
from typing import Mapping, Optional

from ebpfguard.clock import BootClock
from ebpfguard.enrich.devices import DeviceEvents
from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.exec_join import ExecJoin
from ebpfguard.enrich.fields import netns_cookie_of_this_process, text
from ebpfguard.enrich.guard import GuardEvents
from ebpfguard.enrich.network import NetworkEvents
from ebpfguard.enrich.pods import PodDirectory
from ebpfguard.enrich.proctable import ProcessTable
from ebpfguard.enrich.sandbox import CgroupIndex
from ebpfguard.enrich.sandbox_cache import SandboxCache
from ebpfguard.kernel.events import ExecArgsRecord, ExecRecord, ExitRecord, ForkRecord, Header, OpenRecord


_UNSET = object()


class Enricher:
    """Turns records into events; keeps the process table current as it goes.

    `host_netns_cookie` defaults to this process's own network namespace (the agent runs in
    the host's)."""

    def __init__(self, node: str, procs: ProcessTable, cgroups: CgroupIndex,
                 sandbox_settings: Mapping, clock: BootClock, pods: Optional[PodDirectory] = None,
                 host_netns_cookie: object = _UNSET) -> None:
        self.procs = procs
        self.cgroups = cgroups
        self.clock = clock
        self.sandboxes = SandboxCache(cgroups, sandbox_settings, pods)
        self.envelope = EventEnvelope(node, procs, self.sandboxes, clock)
        self.execs = ExecJoin(self.envelope)
        cookie = netns_cookie_of_this_process() if host_netns_cookie is _UNSET else host_netns_cookie
        self.network = NetworkEvents(self.envelope, cookie)
        self.devices = DeviceEvents(self.envelope, cgroups)
        self.on_exec_args = self.execs.on_exec_args
        self.on_exec_argv = self.execs.on_exec_argv
        self.exec_event = self.execs.exec_event
        self.socket_event = self.network.socket_event
        self.connect_event = self.network.connect_event
        self.flow_event = self.network.flow_event
        self.open_event = self.devices.open_event
        self.gpu_event = self.devices.gpu_event
        self.guard_event = GuardEvents(self.envelope).guard_event

    def on_fork(self, rec: ForkRecord) -> None:
        """A new process: into the table, under its parent."""
        self.procs.on_fork(rec.hdr.pid, rec.child_pid, rec.clone_flags, text(rec.hdr.comm))

    def exit_event(self, rec: ExitRecord) -> dict:
        """An `exit` event; the process leaves the table's live set."""
        event = self.envelope.about_process("exit", rec.hdr)
        event["exit_code"] = rec.exit_code
        self.procs.on_exit(rec.hdr.pid)
        return event

    def probe_detached_event(self, family: str) -> dict:
        """A `tamper` event about the agent itself: a probe family lost an attachment (by
        whom the kernel does not say, so the event is the agent's, on the host)."""
        pid = os.getpid()
        hdr = Header(self.clock.now_ktime_ns(), 0, pid, pid, os.getuid(), b"ebpfguard")
        event = self.envelope.base("tamper", hdr, "ebpfguard", sys.executable, None, False)
        event["sandbox"] = {"name": "host", "cgroup": None, "cgroup_id": None, "runtime": "host"}
        event["partial"] = [field for field in event.get("partial", []) if field != "sandbox"]
        event.update({"what": "probe_detached", "probe": family})
        return event
