"""The responder: alerts in, actions taken (or, in dry-run, described), `action` events out.

It runs on the agent's main loop and never waits there: map updates and signals are single
syscalls; a freeze is asked for at once and its `action` event written when the kernel
reports the sandbox frozen (checked every turn of the loop), or when it timed out.

What is in force is remembered here by id, so `ebpfguard actions` can list and lift it;
frozen sandboxes are read from their cgroups instead, so they are listed after a restart too.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from ebpfguard.clock import BootClock, event_time_ns, rfc3339_ns
from ebpfguard.respond import cgroups
from ebpfguard.respond.config import ResponseConfig
from ebpfguard.respond.maps import MapsError, ResponseMaps
from ebpfguard.respond.plan import Planned, Self, destinations_of, plan
from ebpfguard.respond.process import KillRefused, ancestors, kill_process

FROZEN_PREFIX = "frozen:"
MAX_DNS_NAMES = 4096
MAX_ADDRESSES_PER_NAME = 32


@dataclass
class InForce:
    """One thing the kernel enforces for us now."""

    id: str
    action: str
    rule: str
    sandbox: str
    target: dict
    since: str
    expires_mono_ns: int = 0  # 0: until lifted
    undo: Callable[[], None] = field(default=lambda: None, repr=False)

    def as_dict(self) -> dict:
        out = {"id": self.id, "action": self.action, "rule": self.rule, "sandbox": self.sandbox,
               "target": self.target, "since": self.since}
        if self.expires_mono_ns:
            out["expires_in_s"] = round(max(0, self.expires_mono_ns - time.monotonic_ns()) / 1e9, 1)
        return out


@dataclass
class PendingFreeze:
    planned: Planned
    alert: dict
    started_ns: int
    deadline_ns: int


class DnsAnswers:
    """Addresses DNS answered for each name, per sandbox (bounded; oldest names dropped)."""

    def __init__(self, max_names: int = MAX_DNS_NAMES) -> None:
        self.max_names = max_names
        self._seen: OrderedDict[tuple[str, str], list[str]] = OrderedDict()

    def learn(self, event: dict) -> None:
        addresses = [address for address, _ in destinations_of(event)]
        if not addresses:
            return
        sandbox = str((event.get("sandbox") or {}).get("name"))
        names = {event.get("query")} | {a.get("name") for a in event.get("answers") or () if isinstance(a, dict)}
        for name in names:
            if not isinstance(name, str) or not name:
                continue
            key = (sandbox, name.rstrip(".").lower())
            known = self._seen.pop(key, [])
            known = list(dict.fromkeys(known + addresses))[-MAX_ADDRESSES_PER_NAME:]
            self._seen[key] = known
        while len(self._seen) > self.max_names:
            self._seen.popitem(last=False)

    def addresses(self, sandbox: str, name: str) -> list[str]:
        return list(self._seen.get((sandbox, name.rstrip(".").lower()), ()))


class Responder:
    """Acts on alerts as `response` configures; writes one `action` event per action."""

    def __init__(self, config: ResponseConfig, sandbox_settings: Mapping, cgroup_mount: str,
                 maps: Optional[ResponseMaps], write: Callable[[dict], None], node: str,
                 clock: Optional[BootClock] = None) -> None:
        self.config = config
        self.settings = sandbox_settings
        self.mount = cgroup_mount
        self.maps = maps
        self.write = write
        self.node = node
        self.clock = clock or BootClock()
        pid = os.getpid()
        self.agent = Self(pid, frozenset(ancestors(pid)), cgroups.own_cgroup_path())
        self.in_force: dict[str, InForce] = {}
        self.pending: list[PendingFreeze] = []
        self.dns = DnsAnswers()
        self._next_id = 1
        self._next_expiry_check = 0
        if maps is not None and config.quarantine_allow:
            maps.set_allowlist(config.quarantine_allow)

    @property
    def enforcing(self) -> bool:
        return self.config.mode == "enforce" and self.maps is not None

    # -- the pipeline's calls ----------------------------------------------------------------

    def observe(self, event: dict) -> None:
        """Every event passes here: DNS answers are remembered for deny-connect."""
        if event.get("kind") == "dns" and event.get("answers") and self.config.deny_dns_answers:
            self.dns.learn(event)

    def on_alert(self, alert: dict) -> None:
        """Take (or describe) each action configured for the alert's rule."""
        actions = self.config.rules.get(alert.get("rule"), ())
        if not actions:
            return
        sandbox = alert.get("sandbox") or {}
        root = self._sandbox_root(sandbox)
        for action in actions:
            started = time.monotonic_ns()
            planned = plan(alert, action, self.config, self.agent, root)
            if planned.outcome is not None:
                self._emit(alert, planned, planned.outcome, started, reason=planned.reason)
            elif not self.enforcing:
                self._emit(alert, planned, "dry-run", started)
            else:
                self._enforce(alert, planned, started)

    def poll(self) -> None:
        """Called every turn of the loop: finish freezes, end expired denies."""
        now = time.monotonic_ns()
        for pending in list(self.pending):
            path = pending.planned.target["cgroup"]
            if cgroups.is_frozen(self.mount, path):
                self.pending.remove(pending)
                self._emit(pending.alert, pending.planned, "done", pending.started_ns)
            elif now > pending.deadline_ns:
                self.pending.remove(pending)
                self._emit(pending.alert, pending.planned, "failed", pending.started_ns,
                           reason=f"not reported frozen within {self.config.freeze_timeout_s:g}s "
                                  "(the freeze stays asked for)")
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + 1_000_000_000  # TTLs are seconds: once a second will do
        for entry in [e for e in self.in_force.values() if e.expires_mono_ns and e.expires_mono_ns <= now]:
            self._lift_entry(entry, "expired")

    # -- the control socket's calls ----------------------------------------------------------

    def listing(self) -> dict:
        """What is in force now: kernel state we hold, and frozen sandbox cgroups."""
        frozen = [{"id": FROZEN_PREFIX + s.path, "action": "freeze", "sandbox": s.name,
                   "target": {"sandbox": s.name, "cgroup": s.path},
                   "frozen": cgroups.is_frozen(self.mount, s.path)}
                  for s in cgroups.frozen_sandboxes(self.mount, self.settings)]
        return {"mode": self.config.mode, "in_force": [e.as_dict() for e in self.in_force.values()] + frozen}

    def lift(self, entry_id: str) -> dict:
        """End one action by the id `listing` gave it; raises KeyError for an unknown id."""
        if entry_id.startswith(FROZEN_PREFIX):
            path = entry_id[len(FROZEN_PREFIX):]
            if not any(s.path == path for s in cgroups.frozen_sandboxes(self.mount, self.settings)):
                raise KeyError(entry_id)
            cgroups.thaw(self.mount, path)
            return {"lifted": entry_id}
        entry = self.in_force[entry_id]
        self._lift_entry(entry, "lifted")
        return {"lifted": entry_id}

    def close(self) -> None:
        """Forget what is in force: the kernel drops it with the agent's programs."""
        self.in_force.clear()
        self.pending.clear()

    # -- acting ------------------------------------------------------------------------------

    def _sandbox_root(self, sandbox: dict) -> Optional[str]:
        path = sandbox.get("cgroup")
        if not isinstance(path, str):
            return None
        root = cgroups.sandbox_root_path(path, self.settings) if sandbox.get("name") != "host" else path
        return root if os.path.isdir(self.mount.rstrip("/") + root) else None

    def _enforce(self, alert: dict, planned: Planned, started: int) -> None:
        try:
            ids = getattr(self, "_do_" + planned.action.replace("-", "_"))(alert, planned, started)
        except (OSError, MapsError, KillRefused) as exc:
            reason = str(exc) if not isinstance(exc, OSError) else f"{exc.strerror or exc}"
            self._emit(alert, planned, "failed", started, reason=reason)
            return
        if ids is not None:
            self._emit(alert, planned, "done", started, ids=ids)

    def _sandbox_ids(self, planned: Planned) -> tuple[int, int]:
        path = planned.target["cgroup"]
        return os.stat(self.mount.rstrip("/") + path).st_ino, len([p for p in path.split("/") if p])

    def _do_block_flow(self, alert: dict, planned: Planned, _started: int) -> list[str]:
        cookie = planned.target["flow_id"]
        existing = next((e for e in self.in_force.values() if e.action == "block-flow"
                         and e.target["flow_id"] == cookie), None)
        if existing is not None:
            return [existing.id]
        self.maps.block_flow(cookie, time.monotonic_ns())
        return [self._remember(alert, planned, planned.target, lambda: self.maps.unblock_flow(cookie)).id]

    def _do_deny_connect(self, alert: dict, planned: Planned, _started: int) -> Optional[list[str]]:
        sandbox = planned.target["sandbox"]
        dests = [(d["daddr"], d["dport"]) for d in planned.target["destinations"]]
        name = (alert.get("evidence") or {}).get("name")
        if self.config.deny_dns_answers and isinstance(name, str):
            dests += [(address, 0) for address in self.dns.addresses(sandbox, name)]
        dests = list(dict.fromkeys(dests))
        planned.target["destinations"] = [{"daddr": a, "dport": p} for a, p in dests]
        if not dests:
            planned.outcome, planned.reason = "skipped", "the alert names no destination"
            self._emit(alert, planned, "skipped", _started, reason=planned.reason)
            return None
        cgroup_id, level = self._sandbox_ids(planned)
        ttl_ns = int(self.config.deny_ttl_s * 1e9)
        until = time.monotonic_ns() + ttl_ns if ttl_ns else 0
        ids = []
        for address, port in dests:
            existing = next((e for e in self.in_force.values() if e.action == "deny-connect"
                             and e.target["cgroup"] == planned.target["cgroup"]
                             and (e.target["daddr"], e.target["dport"]) == (address, port)), None)
            self.maps.deny(cgroup_id, level, address, port, until)
            if existing is not None:
                existing.expires_mono_ns = until
                ids.append(existing.id)
                continue
            target = {"sandbox": sandbox, "cgroup": planned.target["cgroup"], "daddr": address, "dport": port}
            entry = self._remember(alert, planned, target,
                                   lambda a=address, p=port: self.maps.undeny(cgroup_id, level, a, p))
            entry.expires_mono_ns = until
            ids.append(entry.id)
        return ids

    def _do_quarantine(self, alert: dict, planned: Planned, _started: int) -> list[str]:
        existing = next((e for e in self.in_force.values() if e.action == "quarantine"
                         and e.target["cgroup"] == planned.target["cgroup"]), None)
        if existing is not None:
            return [existing.id]
        cgroup_id, level = self._sandbox_ids(planned)
        self.maps.quarantine(cgroup_id, level, True)
        target = dict(planned.target, allow=[f"{e.network}" + (f" port {e.port}" if e.port else "")
                                             for e in self.config.quarantine_allow])
        return [self._remember(alert, planned, target,
                               lambda: self.maps.quarantine(cgroup_id, level, False)).id]

    def _do_freeze(self, alert: dict, planned: Planned, started: int) -> None:
        cgroups.start_freeze(self.mount, planned.target["cgroup"])
        deadline = started + int(self.config.freeze_timeout_s * 1e9)
        self.pending.append(PendingFreeze(planned, alert, started, deadline))
        return None

    def _do_kill(self, alert: dict, planned: Planned, _started: int) -> list[str]:
        wall_ns = event_time_ns((alert.get("event") or {}).get("time")) or time.time_ns()
        kill_process(planned.target["pid"], wall_ns - self.clock.offset_ns)
        return []

    def _remember(self, alert: dict, planned: Planned, target: dict, undo: Callable[[], None]) -> InForce:
        entry = InForce(str(self._next_id), planned.action, str(alert.get("rule")), target["sandbox"],
                        target, rfc3339_ns(time.time_ns()), undo=undo)
        self._next_id += 1
        self.in_force[entry.id] = entry
        return entry

    def _lift_entry(self, entry: InForce, why: str) -> None:
        started = time.monotonic_ns()
        self.in_force.pop(entry.id, None)
        outcome, reason = "done", None
        try:
            entry.undo()
        except (OSError, MapsError) as exc:
            outcome, reason = "failed", str(exc)
        event = self._event({"rule": entry.rule, "sandbox": {"name": entry.sandbox}}, "lift",
                            dict(entry.target, lifted=entry.id, action=entry.action, why=why),
                            outcome, started, reason)
        self.write(event)

    # -- events ------------------------------------------------------------------------------

    def _emit(self, alert: dict, planned: Planned, outcome: str, started: int,
              reason: Optional[str] = None, ids: Optional[list[str]] = None) -> None:
        event = self._event(alert, planned.action, planned.target, outcome, started, reason)
        if ids:
            event["ids"] = ids
        self.write(event)

    def _event(self, alert: dict, action: str, target: dict, outcome: str, started: int,
               reason: Optional[str]) -> dict:
        now = time.time_ns()
        event = {
            "kind": "action",
            "time": rfc3339_ns(now),
            "node": alert.get("node", self.node),
            "sandbox": alert.get("sandbox"),
            "process": alert.get("process"),
            "action": action,
            "rule": alert.get("rule"),
            "mode": self.config.mode,
            "target": target,
            "outcome": outcome,
            "duration_ms": round((time.monotonic_ns() - started) / 1e6, 3),
        }
        if alert.get("kind") == "alert":
            event["alert"] = {"rule": alert.get("rule"), "time": alert.get("time"), "summary": alert.get("summary")}
            offending = event_time_ns((alert.get("event") or {}).get("time"))
            if offending is not None:
                # From the offending event (its kernel timestamp) to the action in force.
                event["delay_ms"] = round((now - offending) / 1e6, 3)
        if reason is not None:
            event["reason"] = reason
        return event
