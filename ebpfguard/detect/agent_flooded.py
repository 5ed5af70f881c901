"""`agent.flooded`: a sandbox whose volume is costing events.

Reads the agent's own `summary` events (one per sandbox and second, from the kernel's
per-sandbox counts): records a full ring buffer lost, charged to the sandbox whose record it
was, or more records held back by the per-sandbox rate limit than `min_held_back` in one
summary. A sandbox flooding connects to bury what it does next (a miner's exec among a million
events) is the case this names. Each sandbox alerts at most once per `repeat_after_s`.
`host` alerts only for lost records: busy host services reach the rate limit by design.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

from ebpfguard.clock import event_time_ns
from ebpfguard.detect.execinfo import sandbox_name
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector

MAX_SANDBOXES = 4096


@detector("agent.flooded", kinds=("summary",))
class AgentFlooded(Detector):
    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        self.min_lost = int(ctx.params.get("min_lost", 1))
        self.min_held_back = int(ctx.params.get("min_held_back", 5000))
        self.repeat_after_ns = int(float(ctx.params.get("repeat_after_s", 300)) * 1e9)
        if self.min_lost < 1 or self.min_held_back < 1 or self.repeat_after_ns < 0:
            raise ValueError("min_lost and min_held_back must be at least 1, repeat_after_s at least 0")
        self._last_alert: OrderedDict[tuple, int] = OrderedDict()

    def on_event(self, event: Event) -> Iterable[Finding]:
        lost = _counts(event.get("lost"))
        held_back = _counts(event.get("held_back"))
        n_lost, n_held = sum(lost.values()), sum(held_back.values())
        name = sandbox_name(event)
        flooding = n_lost >= self.min_lost or (n_held >= self.min_held_back and name != "host")
        if not flooding or self._repeat(event, name):
            return []
        window = event.get("window_s")
        return [Finding(
            summary=f"sandbox {name} is flooding the agent: {n_lost} records lost, {n_held} held back"
                    f" in {window}s",
            evidence={"lost": lost, "held_back": held_back, "window_s": window,
                      "cgroup": (event.get("sandbox") or {}).get("cgroup")},
        )]

    def _repeat(self, event: Event, name: str) -> bool:
        """True when this sandbox alerted less than repeat_after_s ago (by event time)."""
        now = event_time_ns(event.get("time"))
        if now is None:
            return False
        key = (name, (event.get("sandbox") or {}).get("cgroup_id"))
        last = self._last_alert.get(key)
        if last is not None and abs(now - last) < self.repeat_after_ns:
            return True
        self._last_alert[key] = now
        self._last_alert.move_to_end(key)
        if len(self._last_alert) > MAX_SANDBOXES:
            self._last_alert.popitem(last=False)
        return False


def _counts(value: object) -> dict[str, int]:
    """A {kind: count} object from an event (replayed files may hold anything)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
