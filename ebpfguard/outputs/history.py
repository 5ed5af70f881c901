"""A bounded recent history per sandbox: what each sandbox ran, reached and set off.

The agent feeds it every event, alert and action it writes (it is a sink); `report` and the
runner client read a sandbox's verdict and timeline from it. Everything is bounded, because a
sandbox controls how much it does: at most `max_sandboxes` sandboxes, and per sandbox at most
`max_processes` processes, `max_connections` destinations, `max_names` DNS names,
`max_alerts` alerts and `max_actions` actions; argv is cut to `argv_chars`. What a bound
pushes out is counted (per sandbox, and in `evicted`), never silently gone. A sandbox is kept
`retention_s` after its last known process exits; one with live processes stays however
quiet it is (a miner makes no events while it mines), within `max_sandboxes`.
"""

from __future__ import annotations

import json
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterable, Mapping, Optional, TextIO

from ebpfguard.detect.replay import LineError, numbered_lines, parse_line

HOST = "host"
MAX_IMAGES = 4  # exec images kept per process: the first and the latest ones


@dataclass(frozen=True)
class HistoryBounds:
    max_sandboxes: int = 256
    max_processes: int = 128
    max_connections: int = 128
    max_names: int = 128
    max_alerts: int = 128
    max_actions: int = 64
    argv_chars: int = 512
    retention_s: float = 3600.0
    include_host: bool = False

    @classmethod
    def from_config(cls, section: Mapping) -> "HistoryBounds":
        """The `history` section of the agent's config."""
        return cls(**{name: section[name] for name in cls.__dataclass_fields__ if name in section})


def _bounded_put(table: OrderedDict, key, value, limit: int, evicted: Counter, what: str) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)
        evicted[what] += 1


def _short_argv(argv: Iterable, limit: int) -> tuple[list[str], bool]:
    if type(argv) is list and set(map(type, argv)) <= {str} and sum(map(len, argv)) <= limit:
        return list(argv), False  # the usual command line: short, all text
    out, used = [], 0
    for arg in argv:
        arg = str(arg)
        if used + len(arg) > limit:
            out.append(arg[: max(0, limit - used)])
            return out, True
        out.append(arg)
        used += len(arg)
    return out, False


@dataclass
class SandboxRecord:
    """One sandbox's history. Times are the events' own (RFC 3339 strings)."""

    name: str
    bounds: HistoryBounds
    first_time: Optional[str] = None
    last_time: Optional[str] = None
    last_seen: float = 0.0  # monotonic, for retention
    processes: "OrderedDict[int, dict]" = field(default_factory=OrderedDict)
    live: set = field(default_factory=set)
    connections: "OrderedDict[tuple, dict]" = field(default_factory=OrderedDict)
    names: "OrderedDict[str, set]" = field(default_factory=OrderedDict)  # address -> names
    queries: "OrderedDict[str, int]" = field(default_factory=OrderedDict)
    alerts: "OrderedDict[int, dict]" = field(default_factory=OrderedDict)
    actions: "OrderedDict[int, dict]" = field(default_factory=OrderedDict)
    evicted: Counter = field(default_factory=Counter)
    _seq: int = 0

    def observe(self, event: dict, now: float) -> None:
        """Fold one event, alert or action of this sandbox into the history."""
        self.last_seen = now
        when = event.get("time")
        if isinstance(when, str):
            self.first_time = self.first_time or when
            self.last_time = when
        kind = event.get("kind")
        if kind == "alert":
            self._add_alert(event)
        elif kind == "action":
            self._add(self.actions, self._compact_action(event), self.bounds.max_actions, "actions")
        elif kind == "exec":
            self._add_exec(event)
        elif kind == "exit":
            pid = (event.get("process") or {}).get("pid")
            self.live.discard(pid)
            known = self.processes.get(pid)
            if known is not None:
                known["exited"] = True
                known["exit_code"] = event.get("exit_code")
        elif kind in ("connect", "flow"):
            self._add_destination(event)
        elif kind == "dns":
            self._add_dns(event)
        else:
            self._touch_process(event)

    def _add(self, table: OrderedDict, item: dict, limit: int, what: str) -> None:
        self._seq += 1
        _bounded_put(table, self._seq, item, limit, self.evicted, what)

    def _process_entry(self, process: Mapping) -> Optional[dict]:
        pid = process.get("pid")
        if not isinstance(pid, int):
            return None
        entry = self.processes.get(pid)
        if entry is None:
            return self._new_process_entry(pid, process, [], False)
        self.processes.move_to_end(pid)
        return entry

    def _new_process_entry(self, pid: int, process: Mapping, argv: list[str], argv_cut: bool) -> dict:
        """A process seen for the first time, put in the bounded table."""
        entry = {"pid": pid, "ppid": process.get("ppid"), "comm": process.get("comm"), "exe": process.get("exe"),
                 "argv": argv, "argv_cut": argv_cut, "execs": 0, "exited": False, "exit_code": None,
                 "first_time": None}
        _bounded_put(self.processes, pid, entry, self.bounds.max_processes, self.evicted, "processes")
        return entry

    def _touch_process(self, event: dict) -> None:
        process = event.get("process") or {}
        entry = self._process_entry(process)
        if entry is None:
            return
        if not entry["exited"]:
            self.live.add(entry["pid"])
        if not entry["argv"] and process.get("argv"):
            entry["argv"], entry["argv_cut"] = _short_argv(process["argv"], self.bounds.argv_chars)
        entry["first_time"] = entry["first_time"] or event.get("time")

    def _add_exec(self, event: dict) -> None:
        process = event.get("process") or {}
        if event.get("retval") not in (0, None):
            return  # a failed exec changed nothing about the process
        pid = process.get("pid")
        if not isinstance(pid, int):
            return
        argv, cut = _short_argv(process.get("argv") or [], self.bounds.argv_chars)
        entry = self.processes.get(pid)
        if entry is None:  # most execs follow a fork: the entry is made whole at once
            entry = self._new_process_entry(pid, process, argv, cut)
        else:
            self.processes.move_to_end(pid)
            entry.update(comm=process.get("comm"), exe=process.get("exe"), ppid=process.get("ppid", entry["ppid"]))
            entry["argv"], entry["argv_cut"] = argv, cut
        self.live.add(pid)
        entry["execs"] += 1
        # A shell that execs its last command keeps its pid: the images it ran, the first and
        # the latest ones, show who started what.
        images = entry.setdefault("images", [])
        if len(images) >= MAX_IMAGES:
            del images[1]
        images.append({"exe": entry["exe"], "argv": entry["argv"], "argv_cut": entry["argv_cut"],
                       "time": event.get("time")})
        entry["first_time"] = entry["first_time"] or event.get("time")
        entry["ancestry"] = [{"pid": a.get("pid"), "comm": a.get("comm")} for a in (process.get("ancestry") or [])[:4]]

    def _add_destination(self, event: dict) -> None:
        self._touch_process(event)
        daddr, dport = event.get("daddr"), event.get("dport")
        if daddr is None or dport is None:
            return
        key = (str(daddr), dport)
        entry = self.connections.get(key)
        if entry is None:
            entry = {"daddr": str(daddr), "dport": dport, "connects": 0, "flows": 0, "failed": 0,
                     "sni": None, "first_time": event.get("time"), "pids": []}
            _bounded_put(self.connections, key, entry, self.bounds.max_connections, self.evicted, "connections")
        else:
            self.connections.move_to_end(key)
        entry["last_time"] = event.get("time")
        if event["kind"] == "connect":
            entry["connects"] += 1
            retval = event.get("retval")
            if isinstance(retval, int) and retval < 0 and retval != -115:  # EINPROGRESS is a start
                entry["failed"] += 1
        elif event.get("seq") in (0, None) and event.get("direction", "egress") == "egress":
            entry["flows"] += 1
        if event.get("sni"):
            entry["sni"] = str(event["sni"])
        pid = (event.get("process") or {}).get("pid")
        if isinstance(pid, int) and pid not in entry["pids"] and len(entry["pids"]) < 8:
            entry["pids"].append(pid)

    def _add_dns(self, event: dict) -> None:
        self._touch_process(event)
        query = event.get("query")
        if isinstance(query, str) and not event.get("response"):
            _bounded_put(self.queries, query, self.queries.get(query, 0) + 1, self.bounds.max_names,
                         self.evicted, "names")
        for answer in event.get("answers") or []:
            if not isinstance(answer, dict) or answer.get("type") not in ("A", "AAAA"):
                continue
            address, name = answer.get("value"), answer.get("name")
            if not isinstance(address, str) or not isinstance(name, str):
                continue
            names = self.names.get(address) or set()
            if len(names) < 8:
                names.add(name)
            _bounded_put(self.names, address, names, self.bounds.max_names, self.evicted, "names")

    def _add_alert(self, alert: dict) -> None:
        process = alert.get("process") or {}
        trigger = alert.get("event") or {}
        argv, _ = _short_argv(process.get("argv") or [], self.bounds.argv_chars)
        self._add(self.alerts, {
            "time": alert.get("time"), "rule": alert.get("rule"), "severity": alert.get("severity"),
            "summary": alert.get("summary"), "tags": list(alert.get("tags") or []),
            "evidence": _bounded_evidence(alert.get("evidence") or {}, 4 * self.bounds.argv_chars),
            "trigger": trigger.get("kind"),
            "process": {"pid": process.get("pid"), "comm": process.get("comm"), "exe": process.get("exe"),
                        "argv": argv},
            "destination": _destination(trigger),
        }, self.bounds.max_alerts, "alerts")

    @staticmethod
    def _compact_action(action: dict) -> dict:
        return {key: action.get(key) for key in
                ("time", "action", "rule", "target", "outcome", "reason", "mode", "alert", "duration_ms")
                if key in action}

    def ended(self) -> bool:
        """No process of the sandbox is known to be alive."""
        return not self.live


def _bounded_evidence(evidence: object, limit: int) -> object:
    """The evidence as the alert had it when small; else its JSON cut to `limit` characters
    (an alert's evidence can quote a whole hostile command line)."""
    text = json.dumps(evidence, ensure_ascii=True, default=str)
    return evidence if len(text) <= limit else {"cut": text[:limit]}


def _destination(event: Mapping) -> Optional[dict]:
    if event.get("daddr") is None:
        return None
    return {"daddr": event.get("daddr"), "dport": event.get("dport"), "sni": event.get("sni")}


class SandboxHistory:
    """Every sandbox's record, bounded; a sink the agent writes events, alerts and actions to."""

    def __init__(self, bounds: HistoryBounds = HistoryBounds(), clock: Callable[[], float] = time.monotonic) -> None:
        self.bounds = bounds
        self.clock = clock
        self._records: "OrderedDict[str, SandboxRecord]" = OrderedDict()
        self.evicted: Counter = Counter()
        self.unusable = 0  # lines whose fields were not of the schema's types

    def write(self, event: dict) -> bool:
        """Observe one line of the stream (any kind); never fails the pipeline."""
        name = (event.get("sandbox") or {}).get("name")
        if not isinstance(name, str) or (name == HOST and not self.bounds.include_host):
            return True
        record = self._records.get(name)
        if record is None:
            record = SandboxRecord(name, self.bounds)
            self._records[name] = record
            while len(self._records) > self.bounds.max_sandboxes:
                self._records.popitem(last=False)
                self.evicted["sandboxes"] += 1
        self._records.move_to_end(name)
        # Summed only for a sandbox that has evicted before (most never do): this runs per event.
        before = sum(record.evicted.values()) if record.evicted else 0
        try:
            record.observe(event, self.clock())
        except (TypeError, AttributeError, ValueError):  # a hand-made line of odd shape (report --from)
            self.unusable += 1
        if record.evicted:
            grown = sum(record.evicted.values()) - before
            if grown:
                self.evicted["entries"] += grown
        return True

    def flush_if_due(self, now: Optional[float] = None) -> None:
        """Nothing is buffered (part of the sink protocol)."""

    def close(self) -> None:
        """Nothing to release (part of the sink protocol)."""

    def get(self, name: str) -> Optional[SandboxRecord]:
        return self._records.get(name)

    def names(self) -> list[str]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def expire(self) -> int:
        """Forget sandboxes ended for longer than the retention; how many."""
        cutoff = self.clock() - self.bounds.retention_s
        gone = [name for name, record in self._records.items() if record.ended() and record.last_seen < cutoff]
        for name in gone:
            del self._records[name]
        self.evicted["expired"] += len(gone)
        return len(gone)


MAX_REPORTED_PROBLEMS = 10


def history_from_events(stream: BinaryIO, bounds: HistoryBounds, err: TextIO) -> SandboxHistory:
    """The history an agent would have kept from this events file (JSON Lines as `run`
    writes them). Unusable lines are counted and the first few reported on `err`."""
    history = SandboxHistory(bounds, clock=lambda: 0.0)
    problems = 0
    for number, line in numbered_lines(stream):
        try:
            event = parse_line(line)
        except LineError as problem:
            problems += 1
            if problems <= MAX_REPORTED_PROBLEMS:
                err.write(f"line {number}: skipped: {problem}\n")
            continue
        if event is not None:
            history.write(event)
    if problems > MAX_REPORTED_PROBLEMS:
        err.write(f"{problems} lines skipped in all\n")
    return history
