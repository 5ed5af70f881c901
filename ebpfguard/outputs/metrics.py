"""Prometheus metrics: every metric declared once here, read at scrape time by one collector.

The collector holds no values of its own: it reads the pipeline counters (a locked snapshot),
the sandbox tracker, and the kernel's loss counters through the agent, when Prometheus asks.
Names, labels and meaning are a contract (design.md, "Metrics").
"""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Optional, Protocol, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer

from ebpfguard.enrich.gpu import SandboxGpuUsage
from ebpfguard.enrich.sandbox_tracker import SandboxTracker
from ebpfguard.outputs.delivery import DROP_REASONS, OutputSnapshot
from ebpfguard.outputs.stats import KNOWN_DROPS, LATENCY_BUCKETS_S, OVERRUN_STAGES, PipelineStats

DEFAULT_ADDRESS = "127.0.0.1:9477"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str  # counter, gauge or histogram
    help: str
    labels: tuple[str, ...] = ()


EVENTS = MetricSpec("ebpfguard_events_total", "counter",
                    "Events written, by kind and sandbox (alerts are counted apart).", ("kind", "sandbox"))
ALERTS = MetricSpec("ebpfguard_alerts_total", "counter",
                    "Alerts raised, by rule, severity and sandbox.", ("rule", "severity", "sandbox"))
LOST = MetricSpec("ebpfguard_events_lost_total", "counter",
                  "Records the kernel could not deliver (ring buffer full), by probe family; "
                  "read from the kernel's counters at scrape time.", ("probe",))
HELD_BACK = MetricSpec("ebpfguard_events_held_back_total", "counter",
                       "Records the kernel's per-sandbox rate limit counted instead of sending "
                       "(reported in `summary` events), by kind and sandbox.", ("kind", "sandbox"))
LOST_BY_SANDBOX = MetricSpec("ebpfguard_events_lost_by_sandbox_total", "counter",
                             "Records lost to a full ring buffer, by probe family and the sandbox "
                             "whose record it was.", ("probe", "sandbox"))
DROPPED = MetricSpec("ebpfguard_events_dropped_total", "counter",
                     "Events dropped in userspace, by pipeline stage and reason.", ("stage", "reason"))
OVERRUNS = MetricSpec("ebpfguard_budget_overruns_total", "counter",
                      "Work that went past its time budget: an event on the main loop (pipeline) or in "
                      "detection (detect), a detector's file read (file_read), an exec's reads together "
                      "(exec_files).", ("stage",))
LATENCY = MetricSpec("ebpfguard_pipeline_latency_seconds", "histogram",
                     "Time from a record's kernel timestamp to its event being written, every kind.")
SANDBOXES = MetricSpec("ebpfguard_sandboxes", "gauge", "Sandboxes with a live process.")
PROBE_UP = MetricSpec("ebpfguard_probe_up", "gauge",
                      "1 while the probe family is loaded and attached, else 0.", ("probe",))
ACTIONS = MetricSpec("ebpfguard_actions_total", "counter",
                     "Response actions, by action, rule, sandbox and outcome (done, failed, refused, "
                     "skipped, dry-run).", ("action", "rule", "sandbox", "outcome"))
PROBE_ATTACHED = MetricSpec("ebpfguard_probe_attached", "gauge",
                            "1 while every program of the probe family is still attached where the "
                            "agent attached it (checked every second), else 0.", ("probe",))
LAST_EVENT = MetricSpec("ebpfguard_last_event_timestamp_seconds", "gauge",
                        "Unix time the agent last wrote an event (absent before the first): a "
                        "stalled or blinded agent stops moving it.")
LINEAGE_PROCESSES = MetricSpec("ebpfguard_lineage_processes", "gauge",
                               "Processes the kernel's lineage map holds a sandbox for (docs/lineage.md).")
LINEAGE_EVICTIONS = MetricSpec("ebpfguard_lineage_evictions_total", "counter",
                               "Lineage entries the kernel's LRU pushed out to make room (those "
                               "processes fall back to the cgroup they are in).")
BUILD_INFO = MetricSpec("ebpfguard_build_info", "gauge", "Always 1; the agent's version is a label.", ("version",))

GPU_MEMORY = MetricSpec("ebpfguard_gpu_memory_bytes", "gauge",
                        "GPU memory held by a sandbox's processes, per GPU (NVML; absent without it).",
                        ("sandbox", "gpu"))
GPU_UTILIZATION = MetricSpec("ebpfguard_gpu_utilization_ratio", "gauge",
                             "Share of a GPU's SM time used by a sandbox's processes (NVML, 0 to 1).",
                             ("sandbox", "gpu"))

OUTPUT_SENT = MetricSpec("ebpfguard_output_sent_total", "counter",
                         "Payloads an output (alertmanager, falco, syslog, webhook) delivered.", ("output",))
OUTPUT_FAILED = MetricSpec("ebpfguard_output_failed_total", "counter",
                           "Delivery attempts that failed (each retry counts); the payload is retried "
                           "from the backlog unless the receiver refused it for good.", ("output",))
OUTPUT_DROPPED = MetricSpec("ebpfguard_output_dropped_total", "counter",
                            "Payloads an output gave up on, by reason: queue_full, spool_full (oldest "
                            "dropped), rejected (the receiver refused it), shutdown.", ("output", "reason"))
OUTPUT_QUEUE_DEPTH = MetricSpec("ebpfguard_output_queue_depth", "gauge",
                                "Payloads waiting for an output: its queue plus its backlog (spool).", ("output",))

METRICS = (EVENTS, ALERTS, LOST, HELD_BACK, LOST_BY_SANDBOX, DROPPED, OVERRUNS, LATENCY, SANDBOXES, PROBE_UP,
           PROBE_ATTACHED, LAST_EVENT, LINEAGE_PROCESSES, LINEAGE_EVICTIONS, BUILD_INFO, GPU_MEMORY,
           GPU_UTILIZATION, OUTPUT_SENT, OUTPUT_FAILED, OUTPUT_DROPPED, OUTPUT_QUEUE_DEPTH,
           ACTIONS)


class ProbeView(Protocol):
    """What the collector asks the agent about its probes (answers must be thread-safe)."""

    def probe_up(self) -> Mapping[str, bool]: ...

    def kernel_lost(self) -> Mapping[str, int]: ...

    def gpu_usage(self) -> Sequence[SandboxGpuUsage]: ...

    def probe_attached(self) -> Mapping[str, bool]: ...

    def last_event_time(self) -> Optional[float]: ...

    def lineage_counts(self) -> Optional[tuple[int, int, int]]: ...


def new_family(spec: MetricSpec) -> Metric:
    """An empty metric family for a spec."""
    if spec.type == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    if spec.type == "gauge":
        return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    return HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)


class AgentCollector:
    """Reads the agent's state at scrape time (a prometheus-client custom collector)."""

    def __init__(self, stats: PipelineStats, sandboxes: SandboxTracker, probes: ProbeView,
                 families: Sequence[str], version: str,
                 outputs: Callable[[], Sequence[OutputSnapshot]] = tuple) -> None:
        """`outputs` returns the configured outputs' counters (none by default)."""
        self.stats = stats
        self.outputs = outputs
        self.sandboxes = sandboxes
        self.probes = probes
        self.families = tuple(families)
        self.version = version

    def describe(self) -> Iterable[Metric]:
        return [new_family(spec) for spec in METRICS]

    def collect(self) -> Iterable[Metric]:
        snap = self.stats.snapshot()
        events = new_family(EVENTS)
        for (kind, sandbox), n in sorted(snap.events.items()):
            events.add_metric([kind, sandbox], n)
        alerts = new_family(ALERTS)
        for (rule, severity, sandbox), n in sorted(snap.alerts.items()):
            alerts.add_metric([rule, severity, sandbox], n)
        lost = new_family(LOST)
        kernel_lost = self.probes.kernel_lost()
        for family in self.families:  # every family, at zero until it loses something
            lost.add_metric([family], kernel_lost.get(family, 0))
        held_back = new_family(HELD_BACK)
        for (kind, sandbox), n in sorted(snap.held_back.items()):
            held_back.add_metric([kind, sandbox], n)
        lost_by_sandbox = new_family(LOST_BY_SANDBOX)
        for (probe, sandbox), n in sorted(snap.lost_by_sandbox.items()):
            lost_by_sandbox.add_metric([probe, sandbox], n)
        dropped = new_family(DROPPED)
        for key in sorted(set(KNOWN_DROPS) | set(snap.dropped)):
            dropped.add_metric(list(key), snap.dropped.get(key, 0))
        overruns = new_family(OVERRUNS)
        for stage in OVERRUN_STAGES:
            overruns.add_metric([stage], snap.overruns.get(stage, 0))
        latency = new_family(LATENCY)
        latency.add_metric([], _cumulative_buckets(snap.latency_buckets), snap.latency_sum_s)
        sandboxes = new_family(SANDBOXES)
        sandboxes.add_metric([], self.sandboxes.live_sandboxes())
        probe_up = new_family(PROBE_UP)
        up = self.probes.probe_up()
        for family in self.families:
            probe_up.add_metric([family], 1 if up.get(family) else 0)
        attached_family = new_family(PROBE_ATTACHED)
        attached = self.probes.probe_attached()
        for family in self.families:
            attached_family.add_metric([family], 1 if attached.get(family) else 0)
        build = new_family(BUILD_INFO)
        build.add_metric([self.version], 1)
        actions = new_family(ACTIONS)
        for key, n in sorted(snap.actions.items()):
            actions.add_metric(list(key), n)
        return [events, alerts, lost, held_back, lost_by_sandbox, dropped, overruns, latency, sandboxes, probe_up,
                attached_family, *self._liveness_families(), build, *self._gpu_families(), *self._output_families(),
                actions]

    def _liveness_families(self) -> list[Metric]:
        last_event = new_family(LAST_EVENT)
        when = self.probes.last_event_time()
        if when is not None:
            last_event.add_metric([], when)
        processes, evictions = new_family(LINEAGE_PROCESSES), new_family(LINEAGE_EVICTIONS)
        counts = self.probes.lineage_counts()
        if counts is not None:
            inserts, deletes, live = counts
            processes.add_metric([], live)
            evictions.add_metric([], max(0, inserts - deletes - live))
        return [last_event, processes, evictions]

    def _output_families(self) -> list[Metric]:
        sent, failed, dropped, depth = (new_family(spec) for spec in
                                        (OUTPUT_SENT, OUTPUT_FAILED, OUTPUT_DROPPED, OUTPUT_QUEUE_DEPTH))
        for snap in self.outputs():  # every reason of every output that is on, at zero from the start
            sent.add_metric([snap.output], snap.sent)
            failed.add_metric([snap.output], snap.failed)
            for reason in DROP_REASONS:
                dropped.add_metric([snap.output, reason], snap.dropped.get(reason, 0))
            depth.add_metric([snap.output], snap.queue_depth)
        return [sent, failed, dropped, depth]

    def _gpu_families(self) -> list[Metric]:
        memory: dict = defaultdict(int)
        utilization: dict = defaultdict(float)
        for usage in self.probes.gpu_usage():
            key = (self.sandboxes.label(usage.sandbox), str(usage.gpu_index))  # capped labels may merge
            memory[key] += usage.memory_bytes
            utilization[key] = min(1.0, utilization[key] + usage.utilization_ratio)
        memory_family, utilization_family = new_family(GPU_MEMORY), new_family(GPU_UTILIZATION)
        for key in sorted(memory):
            memory_family.add_metric(list(key), memory[key])
            utilization_family.add_metric(list(key), utilization[key])
        return [memory_family, utilization_family]


def _cumulative_buckets(counts: Sequence[int]) -> list[tuple[str, int]]:
    """Per-bucket counts (the last one +Inf) as Prometheus' cumulative `le` buckets."""
    bounds = [repr(float(b)) for b in LATENCY_BUCKETS_S] + ["+Inf"]
    out, total = [], 0
    for bound, n in zip(bounds, counts):
        total += n
        out.append((bound, total))
    return out


class MetricsAddressError(ValueError):
    """A --metrics-addr that cannot be parsed or served; the message says which and why."""


def parse_address(text: str) -> Optional[tuple[str, int]]:
    """HOST:PORT (IPv6 as [::1]:PORT) -> (host, port); `none` -> None (endpoint disabled)."""
    if text.strip().lower() == "none":
        return None
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise MetricsAddressError(f"'{text}' is not HOST:PORT (e.g. {DEFAULT_ADDRESS}) or 'none'")
    return host, int(port)


@dataclass(frozen=True)
class MetricsTls:
    """TLS for the endpoint; with `client_cafile`, only scrapers with a certificate it signed."""

    certfile: str
    keyfile: str
    client_cafile: Optional[str] = None

    @classmethod
    def from_config(cls, metrics: Mapping[str, object]) -> Optional["MetricsTls"]:
        """From the config's `metrics` section; None when TLS is not configured."""
        certfile, keyfile = str(metrics.get("tls_certfile") or ""), str(metrics.get("tls_keyfile") or "")
        cafile = str(metrics.get("tls_client_cafile") or "")
        if not certfile and not keyfile and not cafile:
            return None
        if not certfile or not keyfile:
            raise MetricsAddressError("metrics.tls_certfile and metrics.tls_keyfile go together "
                                      "(and metrics.tls_client_cafile needs both)")
        return cls(certfile, keyfile, cafile or None)


class MetricsServer:
    """The /metrics endpoint (HTTP, or HTTPS with `tls`), served from its own threads."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, tls: Optional[MetricsTls] = None) -> None:
        try:
            self._httpd = _make_server(host, port, registry, tls)
        except OSError as exc:
            why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            what = f" ({exc.filename})" if exc.filename else ""
            raise MetricsAddressError(
                f"cannot serve metrics on {host}:{port}: {why}{what} "
                f"(choose another with --metrics-addr HOST:PORT, or --metrics-addr none)") from None
        except ssl.SSLError as exc:
            raise MetricsAddressError(f"cannot serve metrics over TLS: {exc.reason or exc}") from None
        # prometheus_client's own loop looks at its stop flag every 0.5 s: two wakeups a
        # second of an idle agent (milliseconds of CPU each on a VM). This one is woken to stop
        # by close().
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 3600},
                                        name="ebpfguard-metrics", daemon=True)
        self._thread.start()
        self.host = host
        self.port = self._httpd.server_address[1]  # the real one when 0 was asked for
        self.scheme = "http" if tls is None else "https"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, at once: the serve loop only looks at its stop flag between requests,
        so a connection of our own wakes it."""
        stopper = threading.Thread(target=self._httpd.shutdown, daemon=True)
        stopper.start()
        while stopper.is_alive():
            try:
                socket.create_connection((self.host, self.port), timeout=0.1).close()
            except OSError:
                pass
            stopper.join(0.02)
        self._httpd.server_close()
        self._thread.join()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged."""


def _make_server(host: str, port: int, registry: CollectorRegistry, tls: Optional[MetricsTls]) -> ThreadingWSGIServer:
    """prometheus_client's exposition (its WSGI app and threading server) bound to host:port,
    IPv6 where the host is, behind TLS where configured (a client certificate required when
    a client CA is given), as start_http_server builds it, but not yet serving."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    httpd = make_server(address[0], port, make_wsgi_app(registry), Server, handler_class=_QuietHandler)
    if tls is not None:
        try:
            httpd.socket = _tls_context(tls).wrap_socket(httpd.socket, server_side=True)
        except BaseException:
            httpd.server_close()
            raise
    return httpd


def _tls_context(tls: MetricsTls) -> ssl.SSLContext:
    """The server's TLS context; a file that cannot be loaded is named in the error."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if tls.client_cafile is not None:
        _load(f"metrics.tls_client_cafile {tls.client_cafile}", context.load_verify_locations, tls.client_cafile)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    _load(f"metrics.tls_certfile {tls.certfile} and tls_keyfile {tls.keyfile}", context.load_cert_chain,
          tls.certfile, tls.keyfile)
    return context


def _load(what: str, load: Callable[..., None], *paths: str) -> None:
    try:
        load(*paths)
    except ssl.SSLError as exc:
        raise MetricsAddressError(f"cannot serve metrics over TLS: {what}: {exc.reason or exc}") from None
    except OSError as exc:
        raise MetricsAddressError(f"cannot serve metrics over TLS: {what}: {exc.strerror or exc}") from None
