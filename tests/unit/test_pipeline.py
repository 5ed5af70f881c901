"""The pipeline after the ring buffer, fed raw records as the kernel writes them, with a real
enricher over a host made of temporary directories."""

from __future__ import annotations

import io
import json
import struct

from ebpfguard.agent import Pipeline
from ebpfguard.enrich.sandbox_tracker import SandboxTracker
from ebpfguard.kernel import events
from ebpfguard.kernel.events import C
from ebpfguard.outputs.sinks import JsonLinesSink
from ebpfguard.outputs.stats import PipelineStats, RateLimitedWarnings
from enrich_env import KTIME, fake_host


def header(kind, cgroup_id, pid, comm):
    return struct.pack(events.EVENT_HEADER.fmt, KTIME, cgroup_id, 0, kind, pid, pid, 0, comm)


def exec_args(cgroup_id, pid, argv, filename):
    args = b"".join(a + b"\0" for a in argv)
    fixed = struct.pack("<IIII", len(argv), 0, len(args), 0)
    return header(C["EVENT_EXEC_ARGS"], cgroup_id, pid, b"sh") + fixed + filename.ljust(C["FILENAME_LEN"], b"\0") + args


def make_pipeline(tmp_path, detect=None):
    host = fake_host(tmp_path)
    out, stats = io.StringIO(), PipelineStats()
    pipeline = Pipeline(host.enricher(), JsonLinesSink(out, stats), stats,
                        SandboxTracker(100, 900.0, max_pids=1000), RateLimitedWarnings(60, io.StringIO()),
                        detect, now_ktime_ns=lambda: KTIME)
    return pipeline, host, out, stats


def lines(out):
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_fork_then_exec_records_become_one_exec_event_with_its_sandbox_and_parent(tmp_path):
    pipeline, host, out, stats = make_pipeline(tmp_path)
    pipeline.on_record(header(C["EVENT_FORK"], host.sandbox_id, 100, b"sh") + struct.pack("<IIQ", 300, 0, 0))
    pipeline.on_record(exec_args(host.sandbox_id, 300, (b"kworker", b"-o", b"pool:3333"), b"/tmp/kworker"))
    pipeline.on_record(header(C["EVENT_EXEC"], host.sandbox_id, 300, b"kworker") + struct.pack("<iIII", 0, 0, 0, 0))
    [event] = lines(out)
    assert event["kind"] == "exec"
    assert event["sandbox"]["name"] == "sandbox-a"
    assert event["process"]["argv"] == ["kworker", "-o", "pool:3333"]
    assert event["process"]["ppid"] == 100
    assert stats.snapshot().events_written == 1


def test_a_detector_alert_follows_its_event(tmp_path):
    def detect(event):
        return [{"kind": "alert", "rule": "test.rule", "severity": "high", "sandbox": event["sandbox"]}]

    pipeline, host, out, stats = make_pipeline(tmp_path, detect)
    pipeline.on_record(header(C["EVENT_EXIT"], host.sandbox_id, 100, b"sh") + struct.pack("<iI", 0, C["EXIT_HAS_CODE"]))
    assert [e["kind"] for e in lines(out)] == ["exit", "alert"]


def test_an_undecodable_record_is_counted_and_the_next_one_still_flows(tmp_path):
    pipeline, host, out, stats = make_pipeline(tmp_path)
    pipeline.on_record(b"\x01\x02")
    pipeline.on_record(header(C["EVENT_EXIT"], host.sandbox_id, 100, b"sh") + struct.pack("<iI", 3, C["EXIT_HAS_CODE"]))
    assert [e["exit_code"] for e in lines(out)] == [3]
    assert stats.snapshot().dropped[("decode", "malformed")] == 1


def test_events_of_a_kind_no_rule_looks_at_skip_detection_but_are_written(tmp_path):
    from ebpfguard.config import load_config
    from ebpfguard.detect.engine import DetectionEngine, load_rules

    engine = DetectionEngine(load_rules(), load_config()["detect"])
    detected = []
    pipeline, host, out, stats = make_pipeline(tmp_path, lambda event: detected.append(event["kind"]) or [])
    pipeline.detects = engine.detects
    pipeline.on_record(header(C["EVENT_SOCKET"], host.sandbox_id, 100, b"sh") + struct.pack("<iiii", 2, 1, 0, 3))
    pipeline.on_record(header(C["EVENT_EXIT"], host.sandbox_id, 100, b"sh") + struct.pack("<iI", 0, C["EXIT_HAS_CODE"]))
    assert [e["kind"] for e in lines(out)] == ["socket", "exit"]
    assert not engine.detects("socket") and engine.detects("exit")
    assert detected == ["exit"]


def test_a_drain_batch_keeps_record_order_and_outlives_its_bad_records(tmp_path):
    pipeline, host, out, stats = make_pipeline(tmp_path)
    batch = [
        header(C["EVENT_FORK"], host.sandbox_id, 100, b"sh") + struct.pack("<IIQ", 300, 0, 0),
        b"\x01\x02",
        exec_args(host.sandbox_id, 300, (b"kworker", b"-o", b"pool:3333"), b"/tmp/kworker"),
        header(C["EVENT_EXEC"], host.sandbox_id, 300, b"kworker") + struct.pack("<iIII", 0, 0, 0, 0),
        header(C["EVENT_EXEC"], host.sandbox_id, 301, b"x") + b"\x00",  # cut short
        header(C["EVENT_EXIT"], host.sandbox_id, 300, b"kworker") + struct.pack("<iI", 7, C["EXIT_HAS_CODE"]),
    ]
    assert pipeline.on_records(batch) is None
    written = lines(out)
    assert [e["kind"] for e in written] == ["exec", "exit"]
    assert written[0]["process"]["ppid"] == 100  # the fork, earlier in the same batch, was seen first
    assert written[1]["exit_code"] == 7
    assert stats.snapshot().dropped[("decode", "malformed")] == 2
    assert stats.snapshot().events_written == 2


def test_a_stopping_agent_past_its_drain_time_drops_a_batch_counted(tmp_path):
    pipeline, host, out, stats = make_pipeline(tmp_path)
    pipeline.drain_deadline = 0.0
    exit_record = header(C["EVENT_EXIT"], host.sandbox_id, 100, b"sh") + struct.pack("<iI", 0, C["EXIT_HAS_CODE"])
    assert pipeline.on_records([exit_record] * 3) < 0
    assert lines(out) == []
    assert stats.snapshot().dropped[("drain", "shutdown")] == 3
