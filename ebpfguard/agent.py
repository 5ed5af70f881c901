"""The agent: load -> decode -> enrich -> detect -> sinks, in one process, one direction.

Each record is handled on its own: an error in one is counted (stats.dropped) and warned
about, never fatal, so one odd event cannot stop the agent.
"""

from __future__ import annotations

import gc
import json
import math
import signal
import socket
import sys
import threading
import time
from typing import Callable, Mapping, Optional, Sequence, TextIO

from ebpfguard.clock import BootClock
from ebpfguard.control import ControlServer
from ebpfguard.detect.worker import DetectWorker
from ebpfguard.enrich.enricher import Enricher
from ebpfguard.kernel.events import (
    ConnectRecord, DecodeError, ExecArgsRecord, ExecArgvRecord, ExecRecord, ExitRecord, FlowRecord,
    ForkRecord, GuardRecord, OpenRecord, SocketRecord, decode,
)
from ebpfguard.detect.relays import RelayIndex
from ebpfguard.enrich.gpu import GpuWatcher, cgroup_path_of_pid, load_nvml
from ebpfguard.enrich.lineage import sandboxed_cgroups
from ebpfguard.kernel.footprint import release_compiler_pages
from ebpfguard.kernel.load import PROBE_FAMILIES, ProbeSet
from ebpfguard.kernel.scheduling import run_this_thread_as_batch
from ebpfguard.enrich.pods import PodDirectory
from ebpfguard.enrich.proctable import ProcessTable
from ebpfguard.enrich.sandbox import CgroupIndex
from ebpfguard.enrich.sandbox_tracker import SandboxTracker
from ebpfguard.enrich.summary import per_cgroup, summary_event
from ebpfguard.outputs.delivery import OutputSnapshot
from ebpfguard.outputs.eventsocket import EventSocket
from ebpfguard.outputs.history import HistoryBounds, SandboxHistory
from ebpfguard.outputs.process import OutputProcess
from ebpfguard.outputs.runner_access import RunnerAccess, parse_grants
from ebpfguard.outputs.runner_service import register_runner_operations
from ebpfguard.outputs.sdnotify import Notifier
from ebpfguard.outputs.sinks import FanOut, HeldUntilTurnEnd, JsonLinesSink, Sink, write_all
from ebpfguard.outputs.stats import PipelineStats, RateLimitedWarnings
from ebpfguard.enrich.wire.dns import DnsParseError
from ebpfguard.respond.config import ResponseConfig
from ebpfguard.respond.maps import ResponseMaps
from ebpfguard.respond.responder import Responder

Detect = Callable[[dict], list]
# Time a stopping agent still drains the ring buffer, and gives the detection worker to
# finish its queue: SIGTERM ends the agent within a second whatever it holds.
SHUTDOWN_DRAIN_S = 0.2
SHUTDOWN_DETECT_S = 0.3
# What on_records answers the ring buffer to end a drain early.
STOP_DRAIN = -1

# Kinds whose detection raises most alerts (the probes wake the agent for their records): the
# detection worker takes them ahead of bulk records.
URGENT_KINDS = frozenset({"exec", "flow", "dns", "open", "escape", "tamper"})
# An idle agent's sleep (any record ends it) lasts until its next housekeeping, or at most this
# long while something between records is timed: deny TTLs, GPU polls, the outputs process and
# clients of the sockets (on a VM each wakeup of a Python thread costs milliseconds of CPU:
# docs/performance.md, "Idle").
DEEP_WAIT_MS = 1000
# How long no record must have come before the agent sleeps deep: records a little further
# apart than the longest bulk wait would each wake it, then climb the waits again (four
# wakeups a record); this far apart the agent wakes no more than its bulk waits would.
DEEP_AFTER_QUIET_S = 0.25
# How often every probe is checked to be still attached (a backstop: the tamper probes see a
# sandbox's bpf() and perf_event_open() calls as they happen).
ATTACH_CHECK_S = 5.0
# Housekeeping (loss counters, flood summaries, expiry) runs every HOUSEKEEPING_S while records
# come, and every ATTACH_CHECK_S while none do: the kernel loses or holds back records only
# while some come, and on a VM each housekeeping of an idle agent costs milliseconds of CPU
# (its pages have gone cold: docs/performance.md, "Idle").
HOUSEKEEPING_S = 1.0
# With no record read for this long, the loss and held-back counters cannot have grown.
QUIET_AFTER_S = 2 * ATTACH_CHECK_S
GIL_SWITCH_INTERVAL_S = 0.001

# Records handled per drain before the loop comes up for its housekeeping (loss counters,
# summaries, flushing, SIGTERM) and for the detection worker's alerts: under a backlog that is
# every few milliseconds, so an alert does not wait behind a long drain of bulk records.
MAX_RECORDS_PER_DRAIN = 512

# Records that only update the enricher's state (the process table, an exec's arguments)...
STATE_ONLY = {ForkRecord: "on_fork", ExecArgsRecord: "on_exec_args", ExecArgvRecord: "on_exec_argv"}
# ...and those that become events: the enricher's method for each.
TO_EVENT = {
    ExecRecord: "exec_event",
    ExitRecord: "exit_event",
    SocketRecord: "socket_event",
    ConnectRecord: "connect_event",
    FlowRecord: "flow_event",
    OpenRecord: "open_event",
    GuardRecord: "guard_event",
}


class Pipeline:
    """Everything after the ring buffer; fed one raw record at a time.

    Detection runs inline by default; the agent sets `submit` to a DetectWorker's queue, and
    writes the alerts it finds from the main loop (`Agent.collect_late_alerts`).
    """

    def __init__(self, enricher: Enricher, sink: Sink, stats: PipelineStats,
                 sandboxes: SandboxTracker, warnings: RateLimitedWarnings, detect: Optional[Detect] = None,
                 now_ktime_ns: Callable[[], int] = BootClock.now_ktime_ns, event_budget_s: float = 0.05,
                 detects: Callable[[str], bool] = lambda kind: True) -> None:
        """`detects(kind)` says whether detection looks at events of a kind at all: the others
        (a storm's socket events, say) skip it."""
        self.enricher = enricher
        self.sink = sink
        self.stats = stats
        self.sandboxes = sandboxes
        self.warnings = warnings
        self.detect = detect
        self._detected_kinds: dict[str, bool] = {}
        self.detects = detects
        self.now_ktime_ns = now_ktime_ns
        self.last_event_time: Optional[float] = None  # wall clock, when an event was last written
        self.event_budget_s = event_budget_s
        # Set when the agent is stopping: records handed over after it end the drain (a flood
        # must not keep a stopping agent draining).
        self.drain_deadline: Optional[float] = None
        self.submit: Callable[[dict], None] = self.detect_and_write
        self._updates_state = {kind: getattr(enricher, name) for kind, name in STATE_ONLY.items()}
        self._to_event = {kind: getattr(enricher, name) for kind, name in TO_EVENT.items()}
        self.responder: Optional[Responder] = None  # set when responses are on
        self.relays: Optional[RelayIndex] = None  # names the sandbox behind a host relay's alerts

    def write_action(self, event: dict) -> None:
        """An `action` event from the responder: written and counted."""
        self.sink.write(event)
        sandbox = self.sandboxes.label(str((event.get("sandbox") or {}).get("name")))
        self.stats.count_action(event["action"], str(event.get("rule")), sandbox, event["outcome"])

    def on_record(self, raw: bytes) -> Optional[int]:
        """Handle one record (see on_records)."""
        return self.on_records((raw,))

    def on_records(self, raws: Sequence[bytes]) -> Optional[int]:
        """Handle a drain's records, in order; STOP_DRAIN once the agent is stopping and its
        drain time is up (the records are then dropped, counted).

        Stage by stage over the batch, not record by record: decode them all, then build
        their events, then write those, then account for them and hand them to detection.
        Each stage's code and data stay in the CPU's caches across the batch, which costs a
        fifth to a third less CPU per event than running every stage for each record in turn
        (docs/performance.md). The order of records, of events and of their lines is
        kept; state updates (a fork, an exec's arguments) come in the enrich stage, in
        record order, before the events that follow them are built."""
        if self.drain_deadline is not None and time.monotonic() > self.drain_deadline:
            self.stats.drop("drain", "shutdown", len(raws))
            return STOP_DRAIN
        self.emit_all(self._enrich_all(self._decode_all(raws)))
        return None

    def _decode_all(self, raws: Sequence[bytes]) -> list:
        records = []
        for raw in raws:
            try:
                records.append(decode(raw))
            except DecodeError as exc:
                self._drop("decode", "malformed", "decode", f"undecodable record dropped: {exc}")
            except Exception as exc:  # noqa: BLE001 - one bad record must not stop the agent
                self._drop("decode", "error", "decode", f"record dropped in decode: {type(exc).__name__}: {exc}")
        return records

    def _enrich_all(self, records: list) -> list[tuple[dict, Optional[int]]]:
        """Each record's event (with its kernel time) or its state update; a record whose
        enrichment runs past the event budget is counted as an overrun."""
        events = []
        updates_state, to_event = self._updates_state.get, self._to_event
        budget_s = self.event_budget_s
        mark = time.monotonic()
        for record in records:
            try:
                update = updates_state(type(record))
                if update is not None:
                    update(record)
                else:
                    events.append((to_event[type(record)](record), record.hdr.ktime_ns))
            except DnsParseError as exc:
                self._drop("enrich", "dns_malformed", "dns", f"malformed DNS packet skipped: {exc}")
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the agent
                self._drop("enrich", "error", "enrich", f"event dropped in enrich: {type(exc).__name__}: {exc}")
            now = time.monotonic()
            if now - mark > budget_s:
                self.stats.overrun("pipeline")
            mark = now
        return events

    def _drop(self, stage: str, reason: str, warning: str, message: str, n: int = 1) -> None:
        """Records or events dropped: counted (stage, reason) and warned about (rate-limited
        per `warning`)."""
        self.stats.drop(stage, reason, n)
        self.warnings.warn(warning, message)

    def emit(self, event: dict, ktime_ns: Optional[int]) -> None:
        """Write an event and pass it on to detection. `ktime_ns` is the kernel timestamp of
        its record, for the latency histogram; None for events not from the kernel (NVML)."""
        self.emit_all([(event, ktime_ns)])

    def emit_all(self, events: list[tuple[dict, Optional[int]]]) -> None:
        """Write events (with their records' kernel times, or None), then count them and
        pass them on to detection, each stage over them all (see on_records)."""
        if not events:
            return
        try:
            written = write_all(self.sink, [event for event, _ in events])
        except Exception as exc:  # noqa: BLE001 - the events are still counted and detected
            written = [False] * len(events)
            self._drop("output", "error", "output", f"writing {len(events)} events failed: {type(exc).__name__}: {exc}",
                       len(events))
        if any(written):
            self.last_event_time = time.time()
        now_ns = self.now_ktime_ns()
        observe, count_event = self.sandboxes.observe, self.stats.count_event
        detected_kinds = self._detected_kinds
        for (event, ktime_ns), was_written in zip(events, written):
            kind = event["kind"]
            try:
                label = observe(kind, event["sandbox"]["name"], event["process"]["pid"])
                count_event(kind, label, (now_ns - ktime_ns) / 1e9 if was_written and ktime_ns is not None else None)
                if self.responder is not None:
                    self.responder.observe(event)
                if self.relays is not None:
                    self.relays.observe(event)
            except Exception as exc:  # noqa: BLE001 - as for any one event; it is still detected
                self._drop("output", "error", "output", f"accounting for a {kind} event failed: {type(exc).__name__}: {exc}")
            if self.detect is not None:
                detected = detected_kinds.get(kind)
                if detected is None:
                    detected = detected_kinds[kind] = self.detects(kind)
                if detected:
                    self.submit(event)

    def detect_and_write(self, event: dict) -> None:
        """Detection inline: run it on one event and write the alerts it raises."""
        self.write_alerts(self.attribute(self.run_detect(event)))

    def run_detect(self, event: dict) -> list:
        """The alerts one event raises (none when detection fails: counted and warned)."""
        assert self.detect is not None
        try:
            return self.detect(event)
        except Exception as exc:  # noqa: BLE001
            self.stats.drop("detect", "error")
            self.warnings.warn("detect", f"detection failed on a {event['kind']} event: {type(exc).__name__}: {exc}")
            return []

    def attribute(self, alerts: list) -> list:
        """Alerts of detection as the relays name them (on the main loop, beside observe)."""
        if self.relays is None:
            return alerts
        return [self.relays.attribute(alert) for alert in alerts]

    def write_alerts(self, alerts: list) -> None:
        """Count and write alerts (those of an event, or those that came later)."""
        for alert in alerts:
            self.stats.count_alert(alert["rule"], alert["severity"], self.sandboxes.label(alert["sandbox"]["name"]))
            self.sink.write(alert)
            if self.responder is not None:
                self.act_on(alert)

    def act_on(self, alert: dict) -> None:
        """The configured actions for an alert, after it is written."""
        try:
            self.responder.on_alert(alert)
        except Exception as exc:  # noqa: BLE001 - a failed action must not stop the agent
            self.stats.drop("respond", "error")
            self.warnings.warn("respond", f"acting on a {alert['rule']} alert failed: {type(exc).__name__}: {exc}")


class Agent:
    """`ebpfguard run`: owns the probes, the pipeline and the main loop."""

    def __init__(self, config: Mapping, output: Optional[str], cgroup_root: str,
                 detect: Optional[Detect] = None, log: TextIO = sys.stderr,
                 socket_path: Optional[str] = None, late_alerts: Optional[Callable[[], list]] = None,
                 response: Optional[ResponseConfig] = None, control_path: Optional[str] = None,
                 stats: Optional[PipelineStats] = None, detects: Callable[[str], bool] = lambda kind: True,
                 detect_may_wait: Optional[Callable[[dict], bool]] = None,
                 late_pending: Callable[[], bool] = lambda: False) -> None:
        """`late_alerts` returns alerts whose detection finished after their event (the
        executable scanner's); the main loop collects them between drains, and while
        `late_pending()` (work waiting on time) it wakes the detection worker to ask again at
        each housekeeping.
        `detect_may_wait(event)` says whether detecting an event may wait on a file the
        sandbox controls: the others are detected on the main loop (DetectWorker). Without
        it, all detection runs on the worker."""
        self.config = config
        self.late_alerts = late_alerts
        self.response = response
        self.log = log
        self.cgroup_root = cgroup_root
        self.stats = stats if stats is not None else PipelineStats()
        limits = config["limits"]
        self.warnings = RateLimitedWarnings(config["logging"]["warn_interval_s"], log)
        procs = ProcessTable(
            max_processes=config["process_table"]["max_processes"],
            ancestry_depth=config["process_table"]["ancestry_depth"],
            max_argv_bytes=config["process_table"]["max_argv_bytes"],
        )
        procs.seed_from_proc()
        # Pod names are looked up only where the kubernetes matcher can find pod UIDs.
        pods = PodDirectory(config["sandbox"]["pod_log_dir"]) if "kubernetes" in config["sandbox"]["matchers"] else None
        enricher = Enricher(
            node=socket.gethostname(),
            procs=procs,
            cgroups=CgroupIndex(cgroup_root, config["sandbox"]["cache_size"]),
            sandbox_settings=config["sandbox"],
            clock=BootClock(),
            pods=pods,
        )
        lines = JsonLinesSink.open(output, self.stats, config["output"])
        self.sink: Sink = lines
        # Each sandbox's recent history, for `report` and the runner client: written at the
        # end of each turn of the loop, before the control socket is served.
        self.history = SandboxHistory(HistoryBounds.from_config(config["history"]))
        self.sink = FanOut(self.sink, HeldUntilTurnEnd(self.history))
        self.viewers: Optional[EventSocket] = None
        if socket_path is not None:
            self.viewers = EventSocket.open(socket_path, self.stats, config["viewer"]["buffer_bytes"],
                                            config["viewer"]["max_viewers"])
            self.sink = FanOut(self.sink, self.viewers)
        # Alertmanager, Falco, syslog, webhooks: after the JSON Lines, in a process of their own.
        self.outputs = OutputProcess(config.get("outputs"), config["logging"]["warn_interval_s"], lines.line_of)
        if self.outputs:
            self.sink = FanOut(self.sink, self.outputs)
        self.sandboxes = SandboxTracker(
            max_labels=config["metrics"]["max_sandbox_labels"],
            retention_s=config["metrics"]["sandbox_label_retention_s"],
            max_pids=config["process_table"]["max_processes"],
        )
        # The control socket: `actions`, and the runner operations over the history, whose
        # watchers get alerts as they are written (so it is a sink too).
        self.control = None
        if control_path is not None:
            access = RunnerAccess(parse_grants(config["clients"]["allow"]))
            self.control = ControlServer.open(control_path, access, config["sandbox"])
            register_runner_operations(self.control, self.history)
            self.sink = FanOut(self.sink, self.control)
        self.pipeline = Pipeline(enricher, self.sink, self.stats, self.sandboxes, self.warnings, detect,
                                 event_budget_s=limits["event_budget_ms"] / 1000, detects=detects)
        self.pipeline.relays = RelayIndex()
        # Detection beside the main loop: what a sandbox can make slow never holds up the drain.
        self.worker: Optional[DetectWorker] = None
        if detect is not None:
            self.worker = DetectWorker(self.pipeline.run_detect, limits["detect_queue"],
                                       limits["event_budget_ms"] / 1000,
                                       on_overrun=lambda: self.stats.overrun("detect"),
                                       on_full=lambda: self.stats.drop("detect", "queue_full"),
                                       poll=self.poll_late_alerts if late_alerts is not None else None,
                                       urgent_kinds=URGENT_KINDS, may_wait=detect_may_wait)
            self.pipeline.submit = self.worker.submit
        self.late_pending = late_pending
        self.probes: Optional[ProbeSet] = None
        # The metrics endpoint reads the kernel's counters from its own thread: this keeps it
        # from reading map fds while the main loop closes them.
        self._probes_lock = threading.Lock()
        self.gpus = self._gpu_watcher(config)
        self.notifier = Notifier()
        # Each family's attachments, as last checked: starts all-false until the probes load.
        self._attached: dict[str, bool] = {family: False for family in PROBE_FAMILIES}
        self._stop = False
        self._floods_read_at = time.monotonic()

    def _gpu_watcher(self, config: Mapping) -> Optional[GpuWatcher]:
        if not config["gpu"]["nvml"]:
            return None
        nvml, why = load_nvml()
        if nvml is None:
            print(f"ebpfguard: GPU usage from NVML is off: {why}", file=self.log, flush=True)
            return None
        enricher = self.pipeline.enricher
        return GpuWatcher(nvml, lambda sample: enricher.gpu_event(sample, cgroup_path_of_pid(sample["pid"])),
                          config["gpu"]["poll_interval_s"])

    def stop(self, *_args) -> None:
        self._stop = True
        self.pipeline.drain_deadline = time.monotonic() + SHUTDOWN_DRAIN_S

    def run(self) -> None:
        """Attach, say `ready`, and drain until SIGINT or SIGTERM; then detach everything."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        # The detection worker and the main loop share the interpreter lock: a thread waiting
        # for it gets it within this time, so an alert found beside a busy drain goes out soon.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        probes = ProbeSet.load(self.config, self.cgroup_root, self.pipeline.on_records)
        release_compiler_pages()  # the compiler has done its work: its ~80 MiB go back
        with self._probes_lock:
            self.probes = probes
        self.seed_lineage(probes)
        self._attached = probes.attached()
        responder = self._responder(probes)
        # Start-up's objects (the rules and their compiled patterns, the seeded process table,
        # bcc's tables) live as long as the agent: out of the collector's view, a full
        # collection walks only what came since (in an exec storm one pause in five seconds,
        # 22 to 28 ms before, 12 to 14 ms after: docs/performance.md).
        gc.collect()
        gc.freeze()
        if self.config["limits"]["batch_scheduling"]:
            try:
                run_this_thread_as_batch()  # the main loop (a thread it starts later inherits it)
            except OSError as exc:  # a seccomp profile may refuse it: the agent works without
                self.warnings.warn("scheduling", f"the main loop stays a normal task: {exc.strerror or exc}")
        print("ready", file=self.log, flush=True)
        self.notifier.send("READY=1")
        busy_ms = int(self.config["probes"]["drain_interval_ms"])
        # While records keep coming (short of a backlog) a turn lasts at least the drain
        # interval: an exec storm wakes the agent with every exec's record, and a wakeup per
        # exec, each taking a CPU from the storm's own fork-exec-wait chain, cost more than
        # the work itself. Records that arrive meanwhile wait at most this long, and are
        # handled together (a larger batch is cheaper per record: docs/performance.md); the
        # alerts detection finds meanwhile are written at once (rest_until).
        min_turn_s = busy_ms / 1000
        idle_ms = max(busy_ms, int(self.config["probes"]["idle_drain_interval_ms"]))
        # Once waits of idle_ms come back empty and no record came for DEEP_AFTER_QUIET_S the
        # agent sleeps deep: any record, the detection worker's alerts and the sockets'
        # clients end that sleep (deep_wait_ms). Where libbpf reads the rings nothing but
        # their records can end a wait, so the wait stays at idle_ms.
        can_sleep_deep = probes.watch(self.wakers())
        wait_ms, deep = busy_ms, False
        next_housekeeping = next_attach_check = last_housekeeping = 0.0
        last_read = time.monotonic()
        try:
            while not self._stop:
                # An empty drain stretches the next wait (up to idle_ms): an idle host should
                # not cost a hundred wakeups a second. Any record brings the short wait back;
                # a drain cut at its bound (a backlog) goes on without waiting.
                turn_started = time.monotonic()
                drained = probes.drain(self.deep_wait_ms(next_housekeeping, responder) if deep else wait_ms,
                                       MAX_RECORDS_PER_DRAIN, deep=deep)
                if self.worker is not None:
                    self.worker.flush()
                if drained >= MAX_RECORDS_PER_DRAIN:
                    wait_ms, deep = 0, False
                elif drained:
                    wait_ms, deep = busy_ms, False
                else:
                    quiet_s = time.monotonic() - last_read
                    deep = can_sleep_deep and wait_ms >= idle_ms and quiet_s >= DEEP_AFTER_QUIET_S
                    wait_ms = min(idle_ms, max(wait_ms, busy_ms) * 2)
                self.collect_late_alerts()
                now = time.monotonic()
                if drained:
                    next_housekeeping = min(next_housekeeping, last_housekeeping + HOUSEKEEPING_S)
                    last_read = now
                if responder is not None:
                    responder.poll()
                self.notifier.ping_if_due(now)
                if self.control is not None:
                    self.control.serve()
                if now >= next_housekeeping:
                    # A full ring loses records, and a cgroup's spent budget holds them back,
                    # only while records come (a budget refills within a second, and the
                    # records it then lets through are read).
                    if now - last_read <= QUIET_AFTER_S:
                        self.check_losses()
                        self.report_floods()
                    self.expire_sandbox_labels()
                    self.history.expire()
                    if self.worker is not None and self.late_pending():
                        self.worker.wake()  # execs wait for the process table: ask again
                    if now >= next_attach_check:
                        self.check_attached(probes)
                        next_attach_check = now + ATTACH_CHECK_S
                    last_housekeeping, next_housekeeping = now, next_attach_check
                if self.gpus is not None:
                    self.poll_gpus()
                # After housekeeping and the GPU poll, which emit events too (a detached
                # probe's): their detection and lines go out now, not after the sleep.
                if self.worker is not None and self.worker.holds_back():  # a held batch goes at the next turn
                    wait_ms, deep = min(wait_ms, busy_ms), False
                if responder is not None and responder.pending:  # freezes to see through
                    deep = False
                self.sink.flush_if_due(math.inf if deep else now)  # nothing waits out a deep sleep
                if 0 < drained < MAX_RECORDS_PER_DRAIN:
                    self.rest_until(turn_started + min_turn_s)
        finally:
            probes.drain(0, 8 * MAX_RECORDS_PER_DRAIN)  # what is there now; a flood has no end
            if self.worker is not None:
                # Bounded, and beside the detach: SIGTERM ends the agent within a second
                # whatever detection holds.
                self.worker.begin_stop(SHUTDOWN_DETECT_S)
            self.check_losses()
            self.report_floods()
            with self._probes_lock:
                probes.close()
                self.probes = None
            if self.worker is not None:
                undone = self.worker.finish_stop()
                if undone:
                    self.stats.drop("detect", "shutdown", undone)
                self.collect_late_alerts()
            if responder is not None:
                responder.close()
            if self.control is not None:
                self.control.close()
            self.sink.close()
            self.notifier.send("STOPPING=1")
            self.notifier.close()
            print(f"ebpfguard: stopped: {json.dumps(self.summary())}", file=self.log, flush=True)

    def deep_wait_ms(self, next_housekeeping: float, responder: Optional[Responder]) -> int:
        """How long an idle agent sleeps: until its next housekeeping (monotonic), at most
        DEEP_WAIT_MS while something between records is timed, and half the systemd watchdog
        interval."""
        wait_s = next_housekeeping - time.monotonic()
        if (self.gpus is not None or self.outputs or self.control is not None and self.control.clients
                or self.viewers is not None and self.viewers.viewers
                or responder is not None and responder.in_force):
            wait_s = min(wait_s, DEEP_WAIT_MS / 1000)
        if self.notifier.watchdog_s:
            wait_s = min(wait_s, self.notifier.watchdog_s / 2)
        return max(1, math.ceil(wait_s * 1000))

    def wakers(self) -> list[int]:
        """Descriptors that are readable when the main loop has work besides the rings: the
        detection worker's alerts, a control request, a viewer to accept."""
        fds = [] if self.worker is None else [self.worker.alerts_fd]
        fds += [server.fileno() for server in (self.control, self.viewers) if server is not None]
        return fds

    def _responder(self, probes: ProbeSet) -> Optional[Responder]:
        """The responder (always, for `actions` and thaw; it acts only when configured), and
        its control-socket operations."""
        if self.response is None:
            return None
        maps = ResponseMaps(probes.bpf) if self.response.mode == "enforce" else None
        responder = Responder(self.response, self.config["sandbox"], self.cgroup_root, maps,
                              self.pipeline.write_action, socket.gethostname())
        if self.response.active:
            self.pipeline.responder = responder
        if self.control is not None:
            self.control.handle("actions.list", lambda _args, _peer: responder.listing())
            self.control.handle("actions.lift", lambda args, _peer: _lift(responder, args))
        return responder

    def seed_lineage(self, probes: ProbeSet) -> None:
        """Tell the kernel the sandboxes and sandboxed processes already there (the lineage
        map starts empty), and from now on every cgroup the enricher finds in a sandbox."""
        room = int(self.config["sandbox"]["lineage_max_processes"])
        for cgroup_id, _path, pids in sandboxed_cgroups(self.cgroup_root, self.config["sandbox"]):
            probes.mark_sandbox_cgroup(cgroup_id)
            for pid in pids[:max(room, 0)]:
                probes.seed_lineage(pid, cgroup_id)
            room -= len(pids)
        self.pipeline.enricher.sandboxes.on_sandbox = probes.mark_sandbox_cgroup

    def check_attached(self, probes: ProbeSet) -> None:
        """Every program still attached where it was? A family that lost one is a `tamper`
        event (agent.tamper alerts on it) and ebpfguard_probe_attached{probe} = 0."""
        before, now = self._attached, probes.attached()
        self._attached = now
        for family, attached in now.items():
            if before.get(family) and not attached:
                self.warnings.warn(f"detached-{family}", f"{family} probe is no longer attached")
                self.pipeline.emit(self.pipeline.enricher.probe_detached_event(family), None)

    def probe_attached(self) -> dict[str, bool]:
        """Each probe family: all its programs attached at the last check (every ATTACH_CHECK_S)."""
        return dict(self._attached)

    def last_event_time(self) -> Optional[float]:
        """Wall-clock time the last event was written (None before the first)."""
        return self.pipeline.last_event_time

    def lineage_counts(self) -> Optional[tuple[int, int, int]]:
        """The lineage map's (inserts, deletes, live entries), read now; None without probes."""
        with self._probes_lock:
            if self.probes is not None:
                return self.probes.lineage_counts()
        return None

    def rest_until(self, until: float) -> None:
        """Sleep out the rest of a turn (see run), but write the detection worker's alerts the
        moment it has them: an alert does not wait for the next turn."""
        while not self._stop:
            spare = until - time.monotonic()
            if spare <= 0:
                return
            if self.worker is None:
                time.sleep(spare)
                return
            if self.worker.wait_for_alerts(spare):
                self.collect_late_alerts()
                self.sink.flush_if_due(time.monotonic())

    def wake_for_late_alerts(self) -> None:
        """Called (from any thread) when late alerts may be ready: the detection worker asks
        for them now; without a worker the main loop asks at every turn anyway."""
        if self.worker is not None:
            self.worker.wake()

    def collect_late_alerts(self) -> None:
        """Write the alerts found off the hot path since the last call: the detection
        worker's (which also polls for late ones), or else the late ones themselves."""
        if self.worker is not None:
            self.pipeline.write_alerts(self.pipeline.attribute(self.worker.take_alerts()))
        elif self.late_alerts is not None:
            self.pipeline.write_alerts(self.poll_late_alerts())

    def poll_late_alerts(self) -> list:
        """Alerts whose detection finished after their event (the executable scanner's)."""
        assert self.late_alerts is not None
        try:
            return self.late_alerts()
        except Exception as exc:  # noqa: BLE001 - as for any detection error
            self.stats.drop("detect", "error")
            self.warnings.warn("detect", f"collecting late alerts failed: {type(exc).__name__}: {exc}")
            return []

    def summary(self) -> dict:
        """What went through, and what was lost (kernel) or dropped (userspace), by cause."""
        snap = self.stats.snapshot()
        return {
            "events": snap.events_written,
            "alerts": snap.alerts_written,
            "lost": snap.lost,
            "held_back": sum(snap.held_back.values()),
            "dropped": {f"{stage}/{reason}": n for (stage, reason), n in snap.dropped.items()},
            "overruns": snap.overruns,
        }

    def poll_gpus(self) -> None:
        """NVML samples, when due, as `gpu` events through the same pipeline."""
        try:
            events = self.gpus.poll_if_due()
        except Exception as exc:  # noqa: BLE001 - the driver can fail; the agent goes on
            self.stats.drop("gpu", "nvml_error")
            self.warnings.warn("gpu", f"NVML poll failed: {exc}")
            return
        for event in events:
            self.pipeline.emit(event, None)

    def check_losses(self) -> None:
        """Fold the kernel's loss counters into stats, warning when they grew."""
        for family, total in self.kernel_lost().items():
            grew = self.stats.update_lost(family, total)
            if grew > 0:
                self.warnings.warn(f"lost-{family}", f"{family} probe lost {grew} events "
                                   f"(ring buffer full; {total} in all)")

    def report_floods(self) -> None:
        """A `summary` event for each sandbox (cgroup) whose records the kernel held back (rate
        limit) or lost (ring full) since the last call, and the per-sandbox loss counters."""
        with self._probes_lock:
            if self.probes is None:
                return
            held_back, lost = self.probes.take_held_back(), self.probes.take_lost_by_cgroup()
        now = time.monotonic()
        window_s, self._floods_read_at = now - self._floods_read_at, now
        held_grew, lost_grew = per_cgroup(held_back), per_cgroup(lost)
        envelope = self.pipeline.enricher.envelope
        for cgroup_id in sorted(held_grew.keys() | lost_grew.keys()):
            held, gone = held_grew.get(cgroup_id, {}), lost_grew.get(cgroup_id, {})
            event = summary_event(envelope, cgroup_id, held, gone, window_s)
            self.stats.count_sandbox_flood(self.sandboxes.label(event["sandbox"]["name"]), held, gone)
            self.pipeline.emit(event, None)

    def expire_sandbox_labels(self) -> None:
        """End the series of sandboxes gone long enough, freeing their label values."""
        for label in self.sandboxes.expire():
            self.stats.forget_sandbox(label)

    def output_counts(self) -> list[OutputSnapshot]:
        """Each configured output's sent, failed and dropped counts and queue depth."""
        return self.outputs.counters()

    def gpu_usage(self) -> list:
        """The latest per-sandbox GPU usage from NVML (empty without it)."""
        return self.gpus.usage if self.gpus is not None else []

    def kernel_lost(self) -> dict[str, int]:
        """The kernel's loss counters, read now; the last values read once the probes are closed."""
        with self._probes_lock:
            if self.probes is not None:
                return self.probes.lost()
        return self.stats.snapshot().lost

    def probe_up(self) -> dict[str, bool]:
        """Each probe family: loaded and attached (all are, between `ready` and shutdown)."""
        with self._probes_lock:
            loaded = set(self.probes.families) if self.probes is not None else set()
        return {family: family in loaded for family in PROBE_FAMILIES}


def _lift(responder: Responder, args: dict) -> dict:
    from ebpfguard.control import ControlError

    entry = args.get("id")
    if not isinstance(entry, str):
        raise ControlError('actions.lift needs {"id": ID} (ids from actions.list)')
    try:
        return responder.lift(entry)
    except KeyError:
        raise ControlError(f"nothing in force has id {entry!r}") from None
