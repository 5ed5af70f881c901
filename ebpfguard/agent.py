"""The agent: load -> decode -> enrich -> detect -> sinks, in one process, one direction.

Each record is handled on its own: an error in one is counted (stats.dropped) and warned
about, never fatal, so one odd event cannot stop the agent.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from typing import Callable, Mapping, Optional, TextIO

from ebpfguard.clock import BootClock
from ebpfguard.enrich.enricher import Enricher
from ebpfguard.kernel.events import (
    ConnectRecord, DecodeError, ExecArgsRecord, ExecRecord, ExitRecord, FlowRecord, ForkRecord,
    OpenRecord, SocketRecord, decode,
)
from ebpfguard.enrich.gpu import GpuWatcher, cgroup_path_of_pid, load_nvml
from ebpfguard.kernel.load import PROBE_FAMILIES, ProbeSet
from ebpfguard.enrich.pods import PodDirectory
from ebpfguard.enrich.proctable import ProcessTable
from ebpfguard.enrich.sandbox import CgroupIndex
from ebpfguard.enrich.sandbox_tracker import SandboxTracker
from ebpfguard.outputs.delivery import OutputSnapshot
from ebpfguard.outputs.eventsocket import EventSocket
from ebpfguard.outputs.history import HistoryBounds, SandboxHistory
from ebpfguard.outputs.process import OutputProcess
from ebpfguard.outputs.sinks import FanOut, JsonLinesSink, Sink
from ebpfguard.outputs.stats import PipelineStats, RateLimitedWarnings
from ebpfguard.enrich.wire.dns import DnsParseError

Detect = Callable[[dict], list]

# Records that only update the enricher's state (the process table, an exec's arguments)...
STATE_ONLY = {ForkRecord: "on_fork", ExecArgsRecord: "on_exec_args"}
# ...and those that become events: the enricher's method for each.
TO_EVENT = {
    ExecRecord: "exec_event",
    ExitRecord: "exit_event",
    SocketRecord: "socket_event",
    ConnectRecord: "connect_event",
    FlowRecord: "flow_event",
    OpenRecord: "open_event",
}


class Pipeline:
    """Everything after the ring buffer; fed one raw record at a time."""

    def __init__(self, enricher: Enricher, sink: Sink, stats: PipelineStats,
                 sandboxes: SandboxTracker, warnings: RateLimitedWarnings, detect: Optional[Detect] = None,
                 now_ktime_ns: Callable[[], int] = BootClock.now_ktime_ns) -> None:
        self.enricher = enricher
        self.sink = sink
        self.stats = stats
        self.sandboxes = sandboxes
        self.warnings = warnings
        self.detect = detect
        self.now_ktime_ns = now_ktime_ns
        self._updates_state = {kind: getattr(enricher, name) for kind, name in STATE_ONLY.items()}
        self._to_event = {kind: getattr(enricher, name) for kind, name in TO_EVENT.items()}

    def on_record(self, raw: bytes) -> None:
        stage = "decode"
        try:
            record = decode(raw)
            stage = "enrich"
            updates_state = self._updates_state.get(type(record))
            if updates_state is not None:
                updates_state(record)
                return
            event = self._to_event[type(record)](record)
            self.emit(event, record.hdr.ktime_ns)
        except DecodeError as exc:
            self.stats.drop("decode", "malformed")
            self.warnings.warn("decode", f"undecodable record dropped: {exc}")
        except DnsParseError as exc:
            self.stats.drop("enrich", "dns_malformed")
            self.warnings.warn("dns", f"malformed DNS packet skipped: {exc}")
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the agent
            self.stats.drop(stage, "error")
            self.warnings.warn(stage, f"event dropped in {stage}: {type(exc).__name__}: {exc}")

    def emit(self, event: dict, ktime_ns: Optional[int]) -> None:
        """Write an event and whatever alerts it raises. `ktime_ns` is the kernel timestamp of
        its record, for the latency histogram; None for events not from the kernel (NVML)."""
        label = self.sandboxes.observe(event["kind"], event["sandbox"]["name"], event["process"]["pid"])
        written = self.sink.write(event)
        latency_s = (self.now_ktime_ns() - ktime_ns) / 1e9 if written and ktime_ns is not None else None
        self.stats.count_event(event["kind"], label, latency_s)
        if self.detect is None:
            return
        try:
            alerts = self.detect(event)
        except Exception as exc:  # noqa: BLE001
            self.stats.drop("detect", "error")
            self.warnings.warn("detect", f"detection failed on a {event['kind']} event: {type(exc).__name__}: {exc}")
            return
        self.write_alerts(alerts)

    def write_alerts(self, alerts: list) -> None:
        """Count and write alerts (those of an event, or those that came later)."""
        for alert in alerts:
            self.stats.count_alert(alert["rule"], alert["severity"], self.sandboxes.label(alert["sandbox"]["name"]))
            self.sink.write(alert)


class Agent:
    """`ebpfguard run`: owns the probes, the pipeline and the main loop."""

    def __init__(self, config: Mapping, output: Optional[str], cgroup_root: str,
                 detect: Optional[Detect] = None, log: TextIO = sys.stderr,
                 socket_path: Optional[str] = None, late_alerts: Optional[Callable[[], list]] = None) -> None:
        """`late_alerts` returns alerts whose detection finished after their event (the
        executable scanner's); the main loop collects them between drains."""
        self.config = config
        self.late_alerts = late_alerts
        self.log = log
        self.cgroup_root = cgroup_root
        self.stats = PipelineStats()
        self.warnings = RateLimitedWarnings(config["logging"]["warn_interval_s"], log)
        procs = ProcessTable(
            max_processes=config["process_table"]["max_processes"],
            ancestry_depth=config["process_table"]["ancestry_depth"],
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
        lines = JsonLinesSink.open(output, self.stats, config["output"]["flush_interval_ms"] / 1000)
        self.sink: Sink = lines
        # Each sandbox's recent history, for `report` and the runner client.
        self.history = SandboxHistory(HistoryBounds.from_config(config["history"]))
        self.sink = FanOut(self.sink, self.history)
        if socket_path is not None:
            viewers = EventSocket.open(socket_path, self.stats, config["viewer"]["buffer_bytes"],
                                       config["viewer"]["max_viewers"])
            self.sink = FanOut(self.sink, viewers)
        # Alertmanager, Falco, syslog, webhooks: after the JSON Lines, in a process of their own.
        self.outputs = OutputProcess(config.get("outputs"), config["logging"]["warn_interval_s"], lines.line_of)
        if self.outputs:
            self.sink = FanOut(self.sink, self.outputs)
        self.sandboxes = SandboxTracker(
            max_labels=config["metrics"]["max_sandbox_labels"],
            retention_s=config["metrics"]["sandbox_label_retention_s"],
            max_pids=config["process_table"]["max_processes"],
        )
        self.pipeline = Pipeline(enricher, self.sink, self.stats, self.sandboxes, self.warnings, detect)
        self.probes: Optional[ProbeSet] = None
        # The metrics endpoint reads the kernel's counters from its own thread: this keeps it
        # from reading map fds while the main loop closes them.
        self._probes_lock = threading.Lock()
        self.gpus = self._gpu_watcher(config)
        self._stop = False

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

    def run(self) -> None:
        """Attach, say `ready`, and drain until SIGINT or SIGTERM; then detach everything."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        probes = ProbeSet.load(self.config, self.cgroup_root, self.pipeline.on_record)
        with self._probes_lock:
            self.probes = probes
        print("ready", file=self.log, flush=True)
        busy_ms = int(self.config["probes"]["drain_interval_ms"])
        idle_ms = max(busy_ms, int(self.config["probes"]["idle_drain_interval_ms"]))
        wait_ms = busy_ms
        next_housekeeping = 0.0
        try:
            while not self._stop:
                # An empty drain stretches the next wait (up to idle_ms): an idle host should
                # not cost a hundred wakeups a second. Any record brings the short wait back.
                wait_ms = busy_ms if probes.drain(wait_ms) else min(idle_ms, wait_ms * 2)
                self.collect_late_alerts()
                now = time.monotonic()
                self.sink.flush_if_due(now)
                if now >= next_housekeeping:
                    self.check_losses()
                    self.expire_sandbox_labels()
                    self.history.expire()
                    next_housekeeping = now + 1.0
                if self.gpus is not None:
                    self.poll_gpus()
        finally:
            probes.drain(0)
            self.check_losses()
            with self._probes_lock:
                probes.close()
                self.probes = None
            self.sink.close()
            print(f"ebpfguard: stopped: {json.dumps(self.summary())}", file=self.log, flush=True)

    def collect_late_alerts(self) -> None:
        """Write the alerts detectors finished off the hot path since the last call."""
        if self.late_alerts is None:
            return
        try:
            alerts = self.late_alerts()
        except Exception as exc:  # noqa: BLE001 - as for any detection error
            self.stats.drop("detect", "error")
            self.warnings.warn("detect", f"collecting late alerts failed: {type(exc).__name__}: {exc}")
            return
        self.pipeline.write_alerts(alerts)

    def summary(self) -> dict:
        """What went through, and what was lost (kernel) or dropped (userspace), by cause."""
        snap = self.stats.snapshot()
        return {
            "events": snap.events_written,
            "alerts": snap.alerts_written,
            "lost": snap.lost,
            "dropped": {f"{stage}/{reason}": n for (stage, reason), n in snap.dropped.items()},
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
