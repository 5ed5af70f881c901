"""The metrics endpoint: names and labels as design.md says, capped sandbox labels, thread safety."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bench.procinfo import thread_sleeps
from ebpfguard.agent import Pipeline
from ebpfguard.outputs.delivery import OutputCounters
from ebpfguard.outputs.metrics import (
    METRICS, AgentCollector, MetricsAddressError, MetricsServer, parse_address,
)
from ebpfguard.enrich.sandbox_tracker import SandboxTracker
from ebpfguard.enrich.gpu import SandboxGpuUsage
from ebpfguard.outputs.sinks import JsonLinesSink
from ebpfguard.outputs.stats import PipelineStats, RateLimitedWarnings
from enrich_env import fake_host

FAMILIES = ("exec", "proc", "net")


class Probes:
    """The agent's answers about its probes: all attached, `lost` as the kernel counted."""

    def __init__(self, lost: dict[str, int] | None = None, gpus: list | None = None,
                 detached: tuple[str, ...] = (), lineage: tuple[int, int, int] | None = None) -> None:
        self.lost = lost or {}
        self.gpus = gpus or []
        self.detached = detached
        self.lineage = lineage
        self.last_event = 1_700_000_000.5

    def probe_up(self) -> dict[str, bool]:
        return {f: True for f in FAMILIES}

    def kernel_lost(self) -> dict[str, int]:
        return dict(self.lost)

    def gpu_usage(self) -> list:
        return list(self.gpus)

    def probe_attached(self) -> dict[str, bool]:
        return {f: f not in self.detached for f in FAMILIES}

    def last_event_time(self) -> float:
        return self.last_event

    def lineage_counts(self) -> tuple[int, int, int] | None:
        return self.lineage


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A real Pipeline.emit writing to memory, and a registry scraping it."""

    def __init__(self, max_labels: int = 100, retention_s: float = 900.0, probes: Probes | None = None) -> None:
        self.clock = Clock()
        self.ktime_now = 5_000_000_000
        self.stats = PipelineStats()
        self.sandboxes = SandboxTracker(max_labels, retention_s, max_pids=65536, clock=self.clock)
        self.out = io.StringIO()
        self._host_dir = tempfile.TemporaryDirectory()
        self.pipeline = Pipeline(
            enricher=fake_host(Path(self._host_dir.name)).enricher(),
            sink=JsonLinesSink(self.out, self.stats),
            stats=self.stats,
            sandboxes=self.sandboxes,
            warnings=RateLimitedWarnings(60, io.StringIO()),
            detect=self.detect,
            now_ktime_ns=lambda: self.ktime_now,
        )
        self.registry = CollectorRegistry()
        self.webhook = OutputCounters("webhook")
        self.registry.register(AgentCollector(self.stats, self.sandboxes, probes or Probes(), FAMILIES, "9.9.9",
                                              outputs=lambda: [self.webhook.snapshot()]))

    @staticmethod
    def detect(event: dict) -> list[dict]:
        if "--donate-level" not in event["process"]["argv"]:
            return []
        return [{"kind": "alert", "rule": "miner.exec", "severity": "high", "sandbox": event["sandbox"]}]

    def emit(self, kind: str, sandbox: str, pid: int, argv: tuple[str, ...] = (), age_s: float = 0.001) -> None:
        event = {"kind": kind, "sandbox": {"name": sandbox}, "process": {"pid": pid, "argv": list(argv)}}
        self.pipeline.emit(event, self.ktime_now - int(age_s * 1e9))

    def text(self) -> str:
        return generate_latest(self.registry).decode()

    def samples(self, name: str) -> dict[tuple, float]:
        """{sorted label items: value} of one sample name in the exposition."""
        found = {}
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                if sample.name == name:
                    found[tuple(sorted(sample.labels.items()))] = sample.value
        return found


def test_every_metric_of_the_contract_is_exposed_with_its_labels():
    h = Harness(probes=Probes(gpus=[SandboxGpuUsage("sandbox-a", 0, 1 << 30, 0.5, (10,))], lineage=(5, 2, 3)))
    h.emit("exec", "sandbox-a", 10)
    h.pipeline.write_action({"kind": "action", "action": "block-flow", "rule": "miner.stratum",
                             "sandbox": {"name": "sandbox-a"}, "outcome": "done"})
    h.stats.count_sandbox_flood("sandbox-a", {"connect": 5}, {"net": 2})
    families = {f.name: f for f in text_string_to_metric_families(h.text())}
    # The parser strips _total from counter family names.
    expected = {
        "ebpfguard_events": ("counter", {"kind", "sandbox"}),
        "ebpfguard_alerts": ("counter", {"rule", "severity", "sandbox"}),
        "ebpfguard_events_lost": ("counter", {"probe"}),
        "ebpfguard_events_held_back": ("counter", {"kind", "sandbox"}),
        "ebpfguard_events_lost_by_sandbox": ("counter", {"probe", "sandbox"}),
        "ebpfguard_events_dropped": ("counter", {"stage", "reason"}),
        "ebpfguard_budget_overruns": ("counter", {"stage"}),
        "ebpfguard_pipeline_latency_seconds": ("histogram", set()),
        "ebpfguard_sandboxes": ("gauge", set()),
        "ebpfguard_probe_up": ("gauge", {"probe"}),
        "ebpfguard_probe_attached": ("gauge", {"probe"}),
        "ebpfguard_last_event_timestamp_seconds": ("gauge", set()),
        "ebpfguard_lineage_processes": ("gauge", set()),
        "ebpfguard_lineage_evictions": ("counter", set()),
        "ebpfguard_build_info": ("gauge", {"version"}),
        "ebpfguard_gpu_memory_bytes": ("gauge", {"sandbox", "gpu"}),
        "ebpfguard_gpu_utilization_ratio": ("gauge", {"sandbox", "gpu"}),
        "ebpfguard_actions": ("counter", {"action", "rule", "sandbox", "outcome"}),
        "ebpfguard_output_sent": ("counter", {"output"}),
        "ebpfguard_output_failed": ("counter", {"output"}),
        "ebpfguard_output_dropped": ("counter", {"output", "reason"}),
        "ebpfguard_output_queue_depth": ("gauge", {"output"}),
    }
    assert {spec.name.removesuffix("_total") for spec in METRICS} == set(expected)
    for name, (kind, labels) in expected.items():
        assert families[name].type == kind, name
        for sample in families[name].samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)


def test_events_and_alerts_are_counted_by_kind_rule_and_sandbox():
    h = Harness()
    h.emit("exec", "sandbox-a", 10)
    h.emit("exec", "sandbox-a", 11, ("xmrig", "--donate-level", "1"))
    h.emit("exit", "sandbox-a", 10)
    h.emit("connect", "host", 1)
    assert h.samples("ebpfguard_events_total") == {
        (("kind", "exec"), ("sandbox", "sandbox-a")): 2.0,
        (("kind", "exit"), ("sandbox", "sandbox-a")): 1.0,
        (("kind", "connect"), ("sandbox", "host")): 1.0,
    }
    assert h.samples("ebpfguard_alerts_total") == {
        (("rule", "miner.exec"), ("sandbox", "sandbox-a"), ("severity", "high")): 1.0,
    }


def test_known_loss_drop_and_probe_series_exist_at_zero_before_anything_happens():
    h = Harness()
    assert h.samples("ebpfguard_events_lost_total") == {(("probe", f),): 0.0 for f in FAMILIES}
    dropped = h.samples("ebpfguard_events_dropped_total")
    assert (("reason", "write_error"), ("stage", "output")) in dropped and set(dropped.values()) == {0.0}
    assert h.samples("ebpfguard_probe_up") == {(("probe", f),): 1.0 for f in FAMILIES}
    assert h.samples("ebpfguard_build_info") == {(("version", "9.9.9"),): 1.0}


def test_output_series_exist_at_zero_for_a_configured_output_and_follow_its_counters():
    h = Harness()
    assert h.samples("ebpfguard_output_dropped_total") == {
        (("output", "webhook"), ("reason", reason)): 0.0 for reason in ("queue_full", "spool_full", "rejected", "shutdown")}
    h.webhook.add(sent=3, failed=2)
    h.webhook.add(dropped="spool_full", n_dropped=4)
    h.webhook.backlog = 5
    assert h.samples("ebpfguard_output_sent_total") == {(("output", "webhook"),): 3.0}
    assert h.samples("ebpfguard_output_failed_total") == {(("output", "webhook"),): 2.0}
    assert h.samples("ebpfguard_output_dropped_total")[(("output", "webhook"), ("reason", "spool_full"))] == 4.0
    assert h.samples("ebpfguard_output_queue_depth") == {(("output", "webhook"),): 5.0}


def test_lost_events_are_read_from_the_kernel_counters_at_scrape_time():
    probes = Probes({"exec": 3})
    h = Harness(probes=probes)
    assert h.samples("ebpfguard_events_lost_total")[(("probe", "exec"),)] == 3.0
    probes.lost["exec"] = 7
    assert h.samples("ebpfguard_events_lost_total")[(("probe", "exec"),)] == 7.0


def test_latency_histogram_measures_kernel_timestamp_to_event_written():
    h = Harness()
    h.emit("exec", "host", 1, age_s=0.003)
    h.emit("exit", "host", 1, age_s=0.2)
    buckets = {dict(k)["le"]: v for k, v in h.samples("ebpfguard_pipeline_latency_seconds_bucket").items()}
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 1
    assert buckets["0.1"] == 1 and buckets["0.25"] == 2 and buckets["+Inf"] == 2
    assert h.samples("ebpfguard_pipeline_latency_seconds_sum")[()] == pytest.approx(0.203)


def test_an_event_that_could_not_be_written_has_no_latency():
    h = Harness()
    h.out.close()  # writes now fail, and are counted as dropped
    h.emit("exec", "host", 1)
    assert h.samples("ebpfguard_pipeline_latency_seconds_count")[()] == 0
    assert h.samples("ebpfguard_events_dropped_total")[(("reason", "write_error"), ("stage", "output"))] == 1


def test_sandboxes_gauge_counts_sandboxes_with_a_live_process():
    h = Harness()
    h.emit("exec", "sandbox-a", 10)
    h.emit("exec", "sandbox-a", 11)
    h.emit("connect", "sandbox-b", 20)
    h.emit("exec", "host", 1)
    assert h.samples("ebpfguard_sandboxes")[()] == 2
    h.emit("exit", "sandbox-a", 10)
    assert h.samples("ebpfguard_sandboxes")[()] == 2
    h.emit("exit", "sandbox-a", 11)
    assert h.samples("ebpfguard_sandboxes")[()] == 1
    h.emit("exec", "host", 20)  # pid 20 moved out of sandbox-b (or was reused by the host)
    assert h.samples("ebpfguard_sandboxes")[()] == 0


def test_sandbox_label_never_exceeds_its_cap_when_500_sandboxes_appear():
    cap = 50
    h = Harness(max_labels=cap)
    for i in range(500):
        h.emit("exec", f"sandbox-{i:03d}", 1000 + i, ("xmrig", "--donate-level", "1"))
        h.emit("exec", "host", 1)
    labels = {dict(k)["sandbox"] for k in h.samples("ebpfguard_events_total")}
    assert len(labels - {"host", "other"}) == cap
    assert {"host", "other"} <= labels
    alert_labels = {dict(k)["sandbox"] for k in h.samples("ebpfguard_alerts_total")}
    assert len(alert_labels) == cap + 1
    events = h.samples("ebpfguard_events_total")
    assert events[(("kind", "exec"), ("sandbox", "other"))] == 500 - cap
    assert h.samples("ebpfguard_sandboxes")[()] == 500  # the gauge is not capped: it is one number


def test_a_sandbox_gone_for_the_retention_gives_its_label_value_back():
    h = Harness(max_labels=1, retention_s=600)
    h.emit("exec", "sandbox-old", 10)
    h.emit("exec", "sandbox-new", 20)
    assert {dict(k)["sandbox"] for k in h.samples("ebpfguard_events_total")} == {"sandbox-old", "other"}
    h.emit("exit", "sandbox-old", 10)
    h.clock.now += 599
    assert h.sandboxes.expire() == []
    h.clock.now += 1
    for label in h.sandboxes.expire():
        h.stats.forget_sandbox(label)
    h.emit("exec", "sandbox-new", 21)
    assert h.samples("ebpfguard_events_total") == {
        (("kind", "exec"), ("sandbox", "other")): 1.0,
        (("kind", "exec"), ("sandbox", "sandbox-new")): 1.0,
    }


def test_a_sandbox_that_comes_back_before_the_retention_keeps_its_label():
    h = Harness(max_labels=1, retention_s=600)
    h.emit("exec", "sandbox-a", 10)
    h.emit("exit", "sandbox-a", 10)
    h.clock.now += 300
    h.emit("exec", "sandbox-a", 11)
    h.clock.now += 900
    assert h.sandboxes.expire() == []


def test_scrapes_while_new_sandboxes_appear_never_fail():
    h = Harness(max_labels=10_000)
    failures: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            try:
                h.text()
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(exc)
                return

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for i in range(20_000):
            h.emit("exec", f"sandbox-{i % 5000}", i)
    finally:
        done.set()
        scraper.join()
    assert failures == []


def test_exposition_passes_promtool_check_metrics():
    h = Harness()
    h.emit("exec", "sandbox-a", 10, ("xmrig", "--donate-level", "1"))
    h.emit("exit", "sandbox-a", 10)
    checked = subprocess.run(["promtool", "check", "metrics"], input=h.text(), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9477", ("127.0.0.1", 9477)),
    ("[::1]:9000", ("::1", 9000)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("none", None),
    ("NONE", None),
])
def test_metrics_address_parses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9477", "localhost", ":9477", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_metrics_address_that_is_not_host_port_is_refused(text):
    with pytest.raises(MetricsAddressError, match="HOST:PORT"):
        parse_address(text)


def test_server_serves_the_registry_and_a_busy_port_is_a_clear_error():
    h = Harness()
    server = MetricsServer("127.0.0.1", 0, h.registry)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert b"ebpfguard_build_info" in response.read()
        with pytest.raises(MetricsAddressError, match="port is in use"):
            MetricsServer("127.0.0.1", server.port, h.registry)
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):  # closed: nothing listens there any more
        socket.create_connection(("127.0.0.1", server.port), timeout=5)


def test_an_idle_endpoint_does_not_wake_until_scraped_and_closes_at_once():
    h = Harness()
    server = MetricsServer("127.0.0.1", 0, h.registry)
    try:
        [serving] = [t for t in threading.enumerate() if t.name == "ebpfguard-metrics"]
        before = thread_sleeps(os.getpid(), serving.native_id)
        time.sleep(1.5)  # prometheus_client's own loop would have woken three times
        assert thread_sleeps(os.getpid(), serving.native_id) - before <= 1
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert b"ebpfguard_build_info" in response.read()
    finally:
        started = time.monotonic()
        server.close()
    assert time.monotonic() - started < 1
    assert not serving.is_alive()


def test_gpu_use_is_exposed_per_sandbox_and_gpu_with_capped_labels():
    usage = [SandboxGpuUsage("sandbox-a", 0, 2 << 30, 0.97, (10,)),
             SandboxGpuUsage("sandbox-b", 0, 1 << 30, 0.2, (11,)),
             SandboxGpuUsage("sandbox-c", 1, 1 << 30, 0.9, (12,))]
    h = Harness(max_labels=1, probes=Probes(gpus=usage))
    h.emit("exec", "sandbox-a", 10)  # takes the one label; b and c become `other`
    h.emit("exec", "sandbox-b", 11)
    h.emit("exec", "sandbox-c", 12)
    assert h.samples("ebpfguard_gpu_memory_bytes") == {
        (("gpu", "0"), ("sandbox", "sandbox-a")): float(2 << 30),
        (("gpu", "0"), ("sandbox", "other")): float(1 << 30),
        (("gpu", "1"), ("sandbox", "other")): float(1 << 30),
    }
    assert h.samples("ebpfguard_gpu_utilization_ratio")[(("gpu", "0"), ("sandbox", "sandbox-a"))] == 0.97


def test_a_detached_probe_reads_zero_and_the_others_one():
    h = Harness(probes=Probes(detached=("net",)))
    assert h.samples("ebpfguard_probe_attached") == {
        (("probe", "exec"),): 1.0, (("probe", "proc"),): 1.0, (("probe", "net"),): 0.0,
    }


def test_last_event_time_is_the_agents_and_lineage_evictions_are_what_the_lru_pushed_out():
    h = Harness(probes=Probes(lineage=(1000, 700, 64)))
    assert h.samples("ebpfguard_last_event_timestamp_seconds") == {(): 1_700_000_000.5}
    assert h.samples("ebpfguard_lineage_processes") == {(): 64.0}
    assert h.samples("ebpfguard_lineage_evictions_total") == {(): 236.0}
