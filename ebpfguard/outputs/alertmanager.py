"""Alerts to Prometheus Alertmanager's API v2 (`POST /api/v2/alerts`), firing while they last.

Alertmanager identifies an alert by its labels, so ours are the ones an operator groups, routes
and silences by across a fleet: `alertname` (the rule id), `severity`, `sandbox`, `node`, and
`pod` and `namespace` where known, plus static labels from the config. The pid is not a label:
a sandbox that starts its miner ten times is one alert, not ten. Annotations carry the rest
(summary, command line, evidence as text).

Alertmanager resolves an alert whose `endsAt` has passed, so while the condition lasts the
worker re-posts every active alert each `resend_interval_s` with `endsAt` three intervals
ahead (an agent that dies leaves its alerts to resolve on their own). The condition ends, and
a resolved alert (`endsAt` now) is posted, when every process that raised it has exited (a
sandbox gone, a miner's flow closed with its process), or when none has re-raised it for
`resolve_after_s`.
"""

from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ebpfguard.clock import event_time_ns, rfc3339_ns
from ebpfguard.outputs import alertview

API_PATH = "/api/v2/alerts"
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Alertmanager takes any number of alerts per POST; batches keep each request small.
BATCH = 64
LABEL_VALUE_MAX = 256


def api_url(url: str) -> str:
    """The alerts endpoint of an Alertmanager given by its base URL (or the endpoint itself)."""
    base = url.rstrip("/")
    return base if base.endswith(API_PATH) else base + API_PATH


def label_safe(name: str) -> bool:
    """A label name Alertmanager accepts, and not one of the reserved `__` names."""
    return bool(LABEL_NAME.match(name)) and not name.startswith("__")


def labels_of(alert: dict, extra: Mapping[str, str]) -> dict[str, str]:
    """The identifying labels: rule, severity, sandbox, node, pod and namespace where known."""
    box = alertview.sandbox(alert)
    labels = dict(extra)
    labels.update({
        "alertname": alert.get("rule") or "unknown",
        "severity": alert.get("severity") or "unknown",
        "sandbox": box.get("name") or "unknown",
        "node": alert.get("node") or "unknown",
    })
    for name in ("pod", "namespace"):
        value = alertview.optional(box.get(name))
        if value is not None:
            labels[name] = value
    return {name: alertview.text(value, LABEL_VALUE_MAX) for name, value in labels.items()}


def annotations_of(alert: dict) -> dict[str, str]:
    """What a person reads on the notification."""
    proc, box = alertview.process(alert), alertview.sandbox(alert)
    notes = {
        "summary": alertview.text(alert.get("summary") or alert.get("rule")),
        "command_line": alertview.command_line(alert),
        "evidence": alertview.evidence_text(alert),
        "process": f"{alertview.text(proc.get('comm'), 64)} (pid {proc.get('pid')})" if proc else "",
        "executable": alertview.text(proc.get("exe") or ""),
        "cgroup": alertview.text(box.get("cgroup") or ""),
        "runtime": alertview.text(box.get("runtime") or ""),
        "tags": alertview.text(",".join(str(t) for t in alert.get("tags") or [])),
    }
    return {key: value for key, value in notes.items() if value}


@dataclass
class _Active:
    labels: dict
    annotations: dict
    starts_ns: int
    last_raised: float            # monotonic
    pids: set = field(default_factory=set)
    pid_bound: bool = False       # raised by a known process: resolved when they have all exited


class AlertmanagerFormat:
    """The alert state machine behind the Alertmanager output (see the module docstring).

    `accepts` runs on the main loop and keeps the set of pids to watch for exits (bounded);
    everything else runs on the output's worker thread."""

    def __init__(self, min_severity: str, extra_labels: Mapping[str, str], resend_interval_s: float,
                 resolve_after_s: float, generator_url: str = "", max_active: int = 10000,
                 wall_ns: Callable[[], int] = time.time_ns) -> None:
        self.min_severity = min_severity
        self.extra_labels = dict(extra_labels)
        self.resend_interval_s = resend_interval_s
        self.resolve_after_s = resolve_after_s
        self.generator_url = generator_url
        self.max_active = max_active
        self.wall_ns = wall_ns
        self._watched: OrderedDict[int, None] = OrderedDict()   # main loop only
        self._active: OrderedDict[tuple, _Active] = OrderedDict()  # worker only
        self._next_resend: Optional[float] = None

    # -- main loop ------------------------------------------------------------------------------

    def accepts(self, event: dict) -> bool:
        kind = event.get("kind")
        if kind == "alert":
            if not alertview.at_least(event.get("severity"), self.min_severity):
                return False
            pid = alertview.process(event).get("pid")
            if isinstance(pid, int):
                self._watched[pid] = None
                self._watched.move_to_end(pid)
                if len(self._watched) > self.max_active:
                    self._watched.popitem(last=False)
            return True
        if kind == "exit" and self._watched:
            pid = alertview.process(event).get("pid")
            if pid in self._watched:
                del self._watched[pid]
                return True
        return False

    # -- worker ---------------------------------------------------------------------------------

    def payloads(self, item: dict, now: float) -> list[bytes]:
        if item.get("kind") == "exit":
            return self._ended(alertview.process(item).get("pid"))
        labels = labels_of(item, self.extra_labels)
        key = tuple(sorted(labels.items()))
        pid = alertview.process(item).get("pid")
        entry = self._active.get(key)
        if entry is not None:
            entry.annotations = annotations_of(item)
            entry.last_raised = now
            if isinstance(pid, int):
                entry.pids.add(pid)
            self._active.move_to_end(key)
            return []  # Alertmanager has it: the next re-send carries the new annotations
        starts = event_time_ns(item.get("time")) or self.wall_ns()
        entry = _Active(labels, annotations_of(item), starts, now)
        if isinstance(pid, int):
            entry.pids.add(pid)
            entry.pid_bound = True
        self._active[key] = entry
        payloads = [self._post([entry], resolved=False)]
        if len(self._active) > self.max_active:
            _, oldest = self._active.popitem(last=False)
            payloads.append(self._post([oldest], resolved=True))
        if self._next_resend is None:
            self._next_resend = now + self.resend_interval_s
        return payloads

    def _ended(self, pid: Any) -> list[bytes]:
        """A watched process exited: alerts left with no live process are resolved."""
        done = []
        for key, entry in list(self._active.items()):
            if pid in entry.pids:
                entry.pids.discard(pid)
                if entry.pid_bound and not entry.pids:
                    done.append(self._active.pop(key))
        return self._batches(done, resolved=True)

    def due(self, now: float) -> list[bytes]:
        stale = [key for key, e in self._active.items() if now - e.last_raised >= self.resolve_after_s]
        return self._batches([self._active.pop(key) for key in stale], resolved=True)

    def resend(self, now: float, force: bool = False) -> list[bytes]:
        if not force and (self._next_resend is None or now < self._next_resend):
            return []
        self._next_resend = now + self.resend_interval_s if self._active else None
        return self._batches(list(self._active.values()), resolved=False)

    def next_due(self) -> Optional[float]:
        if not self._active:
            return None
        oldest = min(e.last_raised for e in self._active.values())
        return min(self._next_resend or float("inf"), oldest + self.resolve_after_s)

    def _batches(self, entries: list, resolved: bool) -> list[bytes]:
        return [self._post(entries[i:i + BATCH], resolved) for i in range(0, len(entries), BATCH)]

    def _post(self, entries: list, resolved: bool) -> bytes:
        now = self.wall_ns()
        body = []
        for entry in entries:
            ends = max(now, entry.starts_ns + 1_000_000) if resolved else \
                now + int(3 * self.resend_interval_s * 1e9)
            alert = {"labels": entry.labels, "annotations": entry.annotations,
                     "startsAt": rfc3339_ns(entry.starts_ns), "endsAt": rfc3339_ns(ends)}
            if self.generator_url:
                alert["generatorURL"] = self.generator_url
            body.append(alert)
        return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode()
