"""`agent.tamper`: a sandbox acting on the agent, on the kernel's BPF and tracing
machinery, or on processes outside it; and the agent's own probes disappearing.

From `tamper` events (bpf/tamper.bpf.c): bpf() of any command, perf_event_open, loading or
removing a kernel module, a signal or pidfd_open aimed at the agent (or kill(-1)), ptrace
attach or process_vm_writev on a process of another lineage; and from the agent itself, a
probe family that is no longer attached (`what: probe_detached`, checked every second).
"""

from __future__ import annotations

from typing import Iterable

from ebpfguard.detect.execinfo import sandbox_name
from ebpfguard.detect.registry import Detector, Event, Finding, detector

_SUMMARIES = {
    "bpf": lambda e: f"bpf({e.get('bpf_cmd')}) from a sandbox",
    "perf_event_open": lambda e: "perf_event_open from a sandbox",
    "module": lambda e: f"{e.get('call')} from a sandbox",
    "signal": lambda e: f"signal {e.get('signal')} sent to the {e.get('target')} (pid {e.get('target_pid')})",
    "pidfd_open": lambda e: f"pidfd_open of the agent (pid {e.get('target_pid')})",
    "ptrace": lambda e: f"ptrace {e.get('request')} of process {e.get('target_pid')} ({e.get('target_sandbox')})",
    "process_vm_writev": lambda e: f"process_vm_writev into process {e.get('target_pid')} ({e.get('target_sandbox')})",
}
_EVIDENCE = ("bpf_cmd", "call", "signal", "target", "target_pid", "target_sandbox", "request", "cpu")


@detector("agent.tamper", kinds=("tamper",))
class AgentTamper(Detector):
    def on_event(self, event: Event) -> Iterable[Finding]:
        what = str(event.get("what"))
        if what == "probe_detached":
            return [Finding(f"the agent's {event.get('probe')} probe is no longer attached",
                            {"what": what, "probe": event.get("probe")})]
        own = sandbox_name(event)
        if own == "host":
            return []
        if what in ("ptrace", "process_vm_writev") and event.get("target_sandbox") == own:
            return []  # inside its own sandbox, whatever cgroup the target is in now
        summary = _SUMMARIES.get(what, lambda e: f"tamper attempt: {what}")(event)
        evidence = {key: event[key] for key in _EVIDENCE if event.get(key) is not None}
        return [Finding(summary, {"what": what, **evidence})]
