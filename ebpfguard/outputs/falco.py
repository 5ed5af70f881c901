"""Falco's JSON alert format, so Falcosidekick (and its 50+ outputs) takes our alerts unchanged.

A Falco alert is `{time, rule, priority, output, output_fields, source, tags, hostname}`.
Falcosidekick refuses one without a known `priority`, a non-empty `rule`, a non-zero RFC 3339
`time` or a non-empty `output_fields` (its FalcoPayload.Check), and reads `k8s.ns.name` and
`k8s.pod.name` as strings. Our fields get Falco's field names where Falco has one
(docs/outputs.md has the table); the rest are `ebpfguard.*`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

from ebpfguard.outputs import alertview
from ebpfguard.outputs.delivery import OneShot

# Our severities as Falco priorities (Falco has eight, Emergency to Debug; we use five).
PRIORITIES = {
    "critical": "Critical",
    "high": "Error",
    "medium": "Warning",
    "low": "Notice",
    "info": "Informational",
}
# Our event kinds as the syscall Falco would name in `evt.type`.
EVENT_TYPES = {"exec": "execve", "connect": "connect", "socket": "socket", "open": "openat", "exit": "procexit"}


def priority(severity: Any) -> str:
    """Falco priority of one of our severities (an unknown one is Warning: never dropped)."""
    return PRIORITIES.get(severity, "Warning")


def output_fields(alert: dict) -> dict[str, Any]:
    """The alert's fields under Falco's names (plus `ebpfguard.*`); only known values."""
    proc, box = alertview.process(alert), alertview.sandbox(alert)
    event = alert.get("event") or {}
    argv = [str(a) for a in proc.get("argv") or []]
    comm = proc.get("comm")
    ancestry = proc.get("ancestry") or []
    fields: dict[str, Any] = {
        "ebpfguard.rule": alert.get("rule"),
        "ebpfguard.severity": alert.get("severity"),
        "ebpfguard.sandbox": box.get("name"),
        "ebpfguard.sandbox.runtime": box.get("runtime"),
        "ebpfguard.sandbox.cgroup": box.get("cgroup"),
        "ebpfguard.event.kind": event.get("kind"),
        "proc.name": comm,
        "proc.exepath": proc.get("exe"),
        "proc.pid": proc.get("pid"),
        "proc.ppid": proc.get("ppid"),
        "proc.pname": ancestry[0].get("comm") if ancestry and isinstance(ancestry[0], dict) else None,
        "user.uid": proc.get("uid"),
        "evt.type": EVENT_TYPES.get(event.get("kind")),
        "container.id": box.get("container_id"),
        "k8s.pod.name": box.get("pod"),
        "k8s.ns.name": box.get("namespace"),
        "k8s.pod.uid": box.get("pod_uid"),
    }
    if argv:
        fields["proc.cmdline"] = alertview.bounded(" ".join([comm or argv[0], *argv[1:]]))
        fields["proc.args"] = alertview.bounded(" ".join(argv[1:]))
    if "daddr" in event:
        fields["fd.rip"], fields["fd.rport"] = event.get("daddr"), event.get("dport")
        if event.get("direction", "egress") == "egress":  # we connected: the remote is the server
            fields["fd.sip"], fields["fd.sport"] = event.get("daddr"), event.get("dport")
    fields["fd.sip.name"] = event.get("sni")
    fields["fd.name"] = event.get("filename") if event.get("kind") == "open" else None
    fields["ebpfguard.dns.query"] = event.get("query")
    for key, value in (alert.get("evidence") or {}).items():
        fields[f"ebpfguard.evidence.{key}"] = alertview.scalar(value)
    return {key: _clean(value) for key, value in fields.items() if value is not None and value != ""}


def _clean(value: Any) -> Any:
    return alertview.text(value) if isinstance(value, str) else value


def falco_alert(alert: dict, source: str, hostname: Optional[str] = None) -> dict:
    """One alert in Falco's format."""
    fields = output_fields(alert)
    prio = priority(alert.get("severity"))
    when = alert.get("time") or ""
    clock = when[11:29] if len(when) >= 29 else when  # HH:MM:SS.nnnnnnnnn, as Falco prints it
    shown = " ".join(f"{k}={fields[k]}" for k in ("ebpfguard.sandbox", "proc.name", "proc.pid", "proc.cmdline",
                                                   "fd.sip", "fd.sport", "k8s.pod.name", "k8s.ns.name")
                     if k in fields)
    return {
        "time": when,
        "rule": alert.get("rule") or "unknown",
        "priority": prio,
        "output": f"{clock}: {prio} {alertview.text(alert.get('summary') or alert.get('rule'))} ({shown})",
        "output_fields": fields,
        "source": source,
        "tags": [str(t) for t in alert.get("tags") or []],
        "hostname": hostname or alert.get("node") or "",
    }


class FalcoFormat(OneShot):
    """Each alert at or above `min_severity` as one Falco JSON object (a POST body, or a line)."""

    def __init__(self, min_severity: str, source: str, line: bool, hostname: Optional[str] = None) -> None:
        self.min_severity = min_severity
        self.source = source
        self.line = line
        self.hostname = hostname

    def accepts(self, event: dict) -> bool:
        return alertview.wants(event, self.min_severity)

    def payloads(self, item: dict, now: float) -> list[bytes]:
        body = json.dumps(falco_alert(item, self.source, self.hostname), ensure_ascii=True, separators=(",", ":"))
        return [(body + "\n" if self.line else body).encode()]


class LineFile:
    """Appends each payload to a file (Falco's `file_output`, for a log shipper to pick up)."""

    def __init__(self, path: str, opener: Callable = open) -> None:
        self.path = path
        self.where = path
        self._opener = opener

    def __call__(self, payload: bytes) -> None:
        # Opened per payload: the file may be rotated (logrotate) between alerts.
        with self._opener(self.path, "ab") as f:
            f.write(payload)
