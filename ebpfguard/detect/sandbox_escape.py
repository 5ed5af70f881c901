"""`sandbox.escape`: a sandboxed process leaving its sandbox or reaching for a way out.

From `escape` events (bpf/escape.bpf.c, the open probe's escape paths, clone at fork): a
cgroup move out of the sandbox's subtree (itself or another process), setns into another
namespace, unshare or clone of new user/mount/net/pid/cgroup namespaces, a mount, or a write
to a known escape path. `sandbox` is the lineage sandbox (docs/lineage.md), so a process
that already left is still named by the sandbox it came from.
"""

from __future__ import annotations

from typing import Iterable

from ebpfguard.detect.execinfo import sandbox_name
from ebpfguard.detect.registry import Detector, Event, Finding, detector


def _describe(event: Event, own: str) -> tuple[str, dict]:
    what = str(event.get("what"))
    if what == "cgroup_move":
        mover = (event.get("process") or {}).get("pid")
        target = event.get("target_pid")
        who = "moved itself" if target == mover else f"moved process {target}"
        return (f"{who} out of sandbox {own} into cgroup {event.get('to_cgroup')}",
                {"from_sandbox": own, "from_cgroup": (event.get("sandbox") or {}).get("cgroup"),
                 "to_cgroup": event.get("to_cgroup"), "to_sandbox": event.get("to_sandbox"),
                 "target_pid": target, "target_sandbox": event.get("target_sandbox")})
    if what == "setns":
        namespaces = event.get("namespaces") or []
        return (f"setns into another {'/'.join(namespaces)} namespace ({event.get('target') or 'fd'})",
                {"namespaces": namespaces, "to": event.get("target")})
    if what in ("unshare", "clone_ns"):
        namespaces = event.get("namespaces") or []
        return (f"{'unshare' if what == 'unshare' else 'clone'} of new {'/'.join(namespaces)} namespaces",
                {"namespaces": namespaces})
    if what in ("mount", "move_mount", "fsmount"):
        target = event.get("target") or ""
        fstype = event.get("fstype") or ""
        return (f"{what} {fstype + ' ' if fstype else ''}{target}".rstrip(),
                {"to": target, "fstype": fstype})
    if what == "path_write":
        return (f"opened escape path {event.get('filename')} for writing", {"to": event.get("filename")})
    return (f"escape attempt: {what}", {})


@detector("sandbox.escape", kinds=("escape",))
class SandboxEscape(Detector):
    def on_event(self, event: Event) -> Iterable[Finding]:
        own = sandbox_name(event)
        if own == "host":
            return []
        # A move inside its own sandbox (a child cgroup, even one named like another sandbox)
        # is no escape: the outermost match names both ends the same.
        if event.get("what") == "cgroup_move" and event.get("to_sandbox") == own:
            return []
        summary, evidence = _describe(event, own)
        return [Finding(summary, {"what": event.get("what"), "from": own, **evidence})]
