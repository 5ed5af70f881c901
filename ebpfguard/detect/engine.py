"""The detection engine: events in, complete `alert` events out.

One instance of each enabled rule's detector, dispatched by event kind, and each enabled
condition rule, indexed by the event kinds its condition can match (compiled once, when the
rules load; a condition that names no kind runs for every event). Findings become alerts
with the rule's severity and tags, minus those an allowlist (the rule's `allow`, the config's
`detect.allow`) covers, and minus repeats (same rule, sandbox, pid and evidence within the
de-duplication window, by the events' own times; a finding may name what makes it the same
instead of its evidence, and a repeat whose severity is higher alerts again). The live agent
and `replay` share it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from typing import Any, Callable, Mapping, Optional

import orjson

from ebpfguard.clock import event_time_ns, rfc3339_ns
from ebpfguard.detect.config import DetectConfig, parse_detect_config
from ebpfguard.detect.fields import EventView, FieldEnv
from ebpfguard.detect.registry import DETECTORS, Detector, Event, Finding, ReadProcessFile, RuleContext
from ebpfguard.detect.ruleindex import RuleIndex
from ebpfguard.detect.rulefile import SEVERITIES, Rule, RuleSet, RulesError, load_rules

__all__ = ["DetectionEngine", "RuleSet", "RulesError", "load_rules", "event_time_ns"]

log = logging.getLogger(__name__)
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


class DetectionEngine:
    """Runs the enabled rules over events; `process` is called once per event."""

    def __init__(
        self,
        rules: RuleSet,
        config: Optional[Mapping[str, Any]] = None,
        read_file: Optional[ReadProcessFile] = None,
    ) -> None:
        self.config: DetectConfig = parse_detect_config(config)
        self._by_kind: dict[str, list[tuple[Rule, Detector]]] = {}
        instances: dict[str, Detector] = {}
        conditions: list[Rule] = []
        self._pollers: list[tuple[Rule, Detector]] = []
        for rule in rules.rules:
            if not rule.enabled:
                continue
            if rule.condition is not None:
                conditions.append(rule)
                continue
            cls = DETECTORS[rule.id]
            instance = cls(RuleContext(rule_id=rule.id, params=rule.params, lists=rules.lists, read_file=read_file))
            instances[rule.id] = instance
            if cls.poll is not Detector.poll:
                self._pollers.append((rule, instance))
            for kind in cls.kinds:
                self._by_kind.setdefault(kind, []).append((rule, instance))
        self._conditions = RuleIndex(conditions)
        self._instances = tuple(instances.values())
        self._fields = FieldEnv(instances, lambda rule_id: _standalone_detector(rules, rule_id, read_file))
        self._file_readers = self._readers_of_files(instances, read_file is not None and not self._conditions.empty)
        self._dedup = _Deduplicator(self.config.dedup_window_ns, self.config.dedup_max_keys)

    def detects(self, kind: str) -> bool:
        """Whether any enabled rule looks at events of this kind (others need no detection)."""
        return kind in self._by_kind or self._conditions.may_match(kind)

    def _readers_of_files(self, instances: Mapping[str, Detector], for_conditions: bool) -> dict[str, list[Detector]]:
        """By event kind, the detectors that may read a process's files: the enabled rules',
        and (`for_conditions`) those whose code conditions' fields run for a disabled rule."""
        readers: dict[str, list[Detector]] = {}
        for rule_id, cls in DETECTORS.items():
            if cls.may_read_files is Detector.may_read_files:
                continue
            instance = instances.get(rule_id) or (self._fields.detector(rule_id) if for_conditions else None)
            if instance is not None:
                for kind in cls.kinds:
                    readers.setdefault(kind, []).append(instance)
        return readers

    def may_read_files(self, event: Event) -> bool:
        """Whether detecting this event may read a file of its process (a miner's config, an
        ssh client's): the agent then detects it off its main loop (ebpfguard.detect.worker)."""
        return any(reader.may_read_files(event) for reader in self._file_readers.get(event.get("kind"), ()))

    def process(self, event: Event) -> list[dict]:
        """Alerts for one event (usually none)."""
        alerts = []
        for rule, instance in self._by_kind.get(event.get("kind"), ()):
            try:
                findings = list(instance.on_event(event))
            except Exception:  # one detector's bug must not stop the agent's other rules
                log.exception("detector %s failed on an event", rule.id)
                continue
            for finding in findings:
                if self._allowed(rule, event):
                    break
                alerts.extend(self._unless_repeat(rule, finding, event))
        if not self._conditions.empty:
            alerts.extend(self._condition_alerts(event))
        return alerts

    def _condition_alerts(self, event: Event) -> list[dict]:
        candidates = self._conditions.for_event(event)
        if not candidates:
            return []
        alerts = []
        view = EventView(event, self._fields)
        # Rules filed under the event's kind may skip their `kind` comparisons.
        indexed = self._conditions.kind_known(event.get("kind"))
        for rule in candidates:
            compiled = rule.condition.compiled
            try:
                if not (compiled.indexed_test if indexed and compiled.kinds else compiled.matches)(view):
                    continue
                finding = rule.condition.finding(view, rule.description)
            except Exception:  # a field's detector code failing must not stop the other rules
                log.exception("condition rule %s failed on an event", rule.id)
                continue
            if not self._allowed(rule, event):
                alerts.extend(self._unless_repeat(rule, finding, event))
        return alerts

    def poll(self) -> list[dict]:
        """Alerts whose findings came after their event (`Detector.poll`); call it often."""
        alerts = []
        for rule, instance in self._pollers:
            try:
                late = list(instance.poll())
            except Exception:  # as in process(): one detector's bug must not stop the others
                log.exception("detector %s failed while polling", rule.id)
                continue
            for event, finding in late:
                if not self._allowed(rule, event):
                    alerts.extend(self._unless_repeat(rule, finding, event))
        return alerts

    def late_pending(self) -> bool:
        """Whether `poll` should be asked again soon without a wake (`Detector.late_pending`);
        callable from any thread."""
        for rule, instance in self._pollers:
            try:
                if instance.late_pending():
                    return True
            except Exception:  # as in poll(): asking again costs little
                log.exception("detector %s failed while asked for pending work", rule.id)
                return True
        return False

    def wake_on_late(self, wake: Callable[[], None]) -> None:
        """`wake` is called, from any thread, whenever `poll` may have alerts."""
        for _rule, instance in self._pollers:
            instance.wake_on_late(wake)

    def see_processes(self, image_holder: Callable[[int], Optional[int]]) -> None:
        """`image_holder(pid)`, callable from any thread: the live process running the image
        `pid` exec'd (ProcessTable.image_holder)."""
        for instance in self._instances:
            instance.see_processes(image_holder)

    def _unless_repeat(self, rule: Rule, finding: Finding, event: Event) -> list[dict]:
        """The finding's alert, or nothing when the same one alerted within the window at this
        severity or a higher one."""
        severity = finding.severity or rule.severity
        if self._dedup.is_repeat(_dedup_key(rule, event, finding), event_time_ns(event.get("time")),
                                 SEVERITY_RANK.get(severity, len(SEVERITY_RANK))):
            return []
        return [_alert(rule, finding, event, severity)]

    def _allowed(self, rule: Rule, event: Event) -> bool:
        if any(condition.matches(event) for condition in rule.allow):
            return True
        return any(entry.rules.match(rule.id) and entry.condition.matches(event) for entry in self.config.allow)


def _standalone_detector(rules: RuleSet, rule_id: str, read_file: Optional[ReadProcessFile]) -> Optional[Detector]:
    """A detector for fields whose rule the engine does not run (disabled): its code, its params."""
    rule = rules.get(rule_id)
    if rule is None or rule_id not in DETECTORS:
        return None
    return DETECTORS[rule_id](RuleContext(rule_id=rule_id, params=rule.params, lists=rules.lists, read_file=read_file))


def _alert(rule: Rule, finding: Finding, event: Event, severity: Optional[str] = None) -> dict:
    """The alert event; `severity` defaults to the finding's, else the rule's."""
    return {
        "kind": "alert",
        "time": event.get("time") or _now_rfc3339(),
        "node": event.get("node"),
        "sandbox": event.get("sandbox"),
        "process": event.get("process"),
        "rule": rule.id,
        "severity": severity or finding.severity or rule.severity,
        "summary": finding.summary,
        "tags": list(rule.tags),
        "evidence": dict(finding.evidence),
        "event": event,
    }


def _dedup_key(rule: Rule, event: Event, finding: Finding) -> Optional[tuple]:
    """None when the event cannot be told apart from others (no pid or no time)."""
    pid = (event.get("process") or {}).get("pid")
    if pid is None or not event.get("time"):
        return None
    sandbox = (event.get("sandbox") or {}).get("name")
    same = finding.same_as if finding.same_as is not None else _evidence_key(finding.evidence)
    return (rule.id, sandbox, pid, same)


def _evidence_key(evidence: Mapping) -> str:
    """Evidence as canonical text: equal evidence, equal text. orjson does the common case
    (an alerting storm repeats it per event); what it refuses (non-str keys, ints past 64
    bits) goes through the stdlib."""
    try:
        return orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS, default=str).decode()
    except TypeError:
        return json.dumps(evidence, sort_keys=True, default=str)


class _Deduplicator:
    """Remembers when each alert key first alerted, and at what severity (its rank in
    SEVERITIES); bounded, least recently used evicted."""

    def __init__(self, window_ns: int, max_keys: int) -> None:
        self.window_ns = window_ns
        self.max_keys = max_keys
        self._first_seen: OrderedDict[tuple, tuple[int, int]] = OrderedDict()

    def is_repeat(self, key: Optional[tuple], time_ns: Optional[int], severity_rank: int) -> bool:
        """True for a key that alerted within the window at this severity or a higher one."""
        if key is None or time_ns is None:
            return False
        first, rank = self._first_seen.get(key, (None, -1))
        # abs(): recorded files are not always in time order.
        if first is not None and abs(time_ns - first) < self.window_ns and severity_rank <= rank:
            self._first_seen.move_to_end(key)
            return True
        self._first_seen[key] = (time_ns, severity_rank)
        self._first_seen.move_to_end(key)
        if len(self._first_seen) > self.max_keys:
            self._first_seen.popitem(last=False)
        return False


def _now_rfc3339() -> str:
    return rfc3339_ns(time.time_ns())
