"""Escape and tamper records (bpf/escape.bpf.c, bpf/tamper.bpf.c) as `escape` and `tamper`
events: what was tried, and from where to where, with kernel numbers as names."""

from __future__ import annotations

import os
import signal
from typing import Optional

from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.fields import text
from ebpfguard.kernel.events import GuardRecord

# clone/unshare flags, and setns's nstype, of the namespaces a sandbox may try to leave or enter.
NAMESPACE_FLAGS = {
    0x00020000: "mount", 0x02000000: "cgroup", 0x04000000: "uts", 0x08000000: "ipc",
    0x10000000: "user", 0x20000000: "pid", 0x40000000: "net", 0x00000080: "time",
}
BPF_COMMANDS = (
    "BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET", "BPF_PROG_ATTACH",
    "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN", "BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID",
    "BPF_PROG_GET_FD_BY_ID", "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD", "BPF_PROG_QUERY",
    "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID", "BPF_TASK_FD_QUERY",
    "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE", "BPF_BTF_GET_NEXT_ID", "BPF_MAP_LOOKUP_BATCH",
    "BPF_MAP_LOOKUP_AND_DELETE_BATCH", "BPF_MAP_UPDATE_BATCH", "BPF_MAP_DELETE_BATCH", "BPF_LINK_CREATE",
    "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID", "BPF_LINK_GET_NEXT_ID", "BPF_ENABLE_STATS",
    "BPF_ITER_CREATE", "BPF_LINK_DETACH", "BPF_PROG_BIND_MAP", "BPF_TOKEN_CREATE",
)
PTRACE_REQUESTS = {16: "PTRACE_ATTACH", 0x4206: "PTRACE_SEIZE"}
MODULE_CALLS = ("init_module", "finit_module", "delete_module")


def namespace_names(flags: int) -> list[str]:
    """The namespaces named by CLONE_NEW* flags, in a fixed order."""
    return [name for bit, name in NAMESPACE_FLAGS.items() if flags & bit]


def signal_name(number: int) -> str:
    """SIGKILL for 9; `0` (the existence probe of `kill -0`) and unknown numbers as numbers."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


class GuardEvents:
    """Builds `escape` and `tamper` events; cgroup and lineage ids resolved to sandboxes."""

    def __init__(self, envelope: EventEnvelope, proc_root: str = "/proc") -> None:
        self.envelope = envelope
        self.proc_root = proc_root

    def guard_event(self, rec: GuardRecord) -> dict:
        event = self.envelope.about_process("escape" if rec.escape else "tamper", rec.hdr)
        event["what"] = rec.what
        event.update(self._fields(rec))
        return event

    def _sandbox_name(self, cgroup_id: int) -> str:
        return self.envelope.sandboxes.sandbox_of(cgroup_id)[0]["name"]

    def _target_sandbox(self, rec: GuardRecord) -> str:
        """The acted-on process's lineage sandbox; `host` where it has none."""
        if not rec.target_lineage_cgroup_id:
            return "host"
        return self._sandbox_name(rec.target_lineage_cgroup_id)

    def _fields(self, rec: GuardRecord) -> dict:
        what = rec.what
        if what == "cgroup_move":
            to_cgroup = self.envelope.sandboxes.cgroups.path_of(rec.target_cgroup_id) or text(rec.path)
            return {"target_pid": rec.target_pid, "target_sandbox": self._target_sandbox(rec),
                    "to_cgroup": to_cgroup, "to_cgroup_id": rec.target_cgroup_id,
                    "to_sandbox": self._sandbox_name(rec.target_cgroup_id)}
        if what == "setns":
            return {"fd": rec.aux, "namespaces": namespace_names(rec.arg) or ["any"],
                    "target": self._fd_target(rec.hdr.pid, rec.aux)}
        if what in ("unshare", "clone_ns"):
            return {"namespaces": namespace_names(rec.arg), "flags": rec.arg}
        if what in ("mount", "move_mount", "fsmount"):
            return {"target": text(rec.path), "fstype": text(rec.detail), "flags": rec.arg}
        if what == "path_write":
            return {"filename": text(rec.path), "flags": rec.arg}
        if what == "bpf":
            cmd = rec.aux
            return {"bpf_cmd": BPF_COMMANDS[cmd] if 0 <= cmd < len(BPF_COMMANDS) else str(cmd)}
        if what in ("ptrace", "process_vm_writev"):
            return {"target_pid": rec.target_pid, "target_sandbox": self._target_sandbox(rec),
                    "request": PTRACE_REQUESTS.get(rec.aux, str(rec.aux)) if what == "ptrace" else None}
        if what == "signal":
            return {"target_pid": rec.target_pid, "signal": signal_name(rec.aux),
                    "target": "every process" if rec.target_pid == -1 else "agent"}
        if what == "pidfd_open":
            return {"target_pid": rec.target_pid, "target": "agent"}
        if what == "perf_event_open":
            return {"target_pid": rec.target_pid, "cpu": rec.aux}
        if what == "module":
            return {"call": MODULE_CALLS[rec.aux] if 0 <= rec.aux < len(MODULE_CALLS) else str(rec.aux)}
        return {}

    def _fd_target(self, pid: int, fd: int) -> Optional[str]:
        """What a setns fd names (`net:[4026532...]`, a pidfd...), if it is still open."""
        try:
            return os.readlink(f"{self.proc_root}/{pid}/fd/{fd}")
        except (OSError, ValueError):
            return None
