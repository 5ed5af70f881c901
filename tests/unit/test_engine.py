"""The engine: alerts built per design.md, allowlists, de-duplication by event time."""

from __future__ import annotations

import pytest
from rules_helpers import KEYWORD_RULE, MINER_SCORE_CONDITION_ONLY, write

from ebpfguard.detect.engine import DetectionEngine, event_time_ns, load_rules
from ebpfguard.detect.filereader import ReadResult


def exec_event(argv, *, pid=42, time="2024-05-01T12:00:00.000000001Z", sandbox="sandbox-a", comm="tool"):
    return {
        "kind": "exec",
        "time": time,
        "node": "host1",
        "sandbox": {"name": sandbox},
        "process": {"pid": pid, "comm": comm, "argv": argv, "ancestry": [{"pid": 1, "comm": "systemd", "exe": "/sbin/init"}]},
        "extra": "kept",
    }


def engine(tmp_path, config=None):
    return DetectionEngine(load_rules([write(tmp_path, "r.yaml", KEYWORD_RULE)]), config)


def test_alert_copies_context_and_carries_rule_and_evidence(tmp_path):
    event = exec_event(["tool", "alpha"])
    [alert] = engine(tmp_path).process(event)
    assert alert["kind"] == "alert" and alert["rule"] == "test.keyword"
    assert alert["severity"] == "low" and alert["tags"] == ["T0000"]
    assert alert["evidence"] == {"words": ["alpha"]}
    assert (alert["time"], alert["node"], alert["sandbox"], alert["process"]) == (
        event["time"], "host1", {"name": "sandbox-a"}, event["process"])
    assert alert["event"]["extra"] == "kept"


def test_events_of_other_kinds_are_not_given_to_the_detector(tmp_path):
    assert engine(tmp_path).process({"kind": "connect", "process": {"argv": ["alpha"]}}) == []


def test_same_rule_process_and_evidence_within_window_alerts_once(tmp_path):
    guard = engine(tmp_path, {"dedup_window_s": 60})
    first = guard.process(exec_event(["tool", "alpha"]))
    again = guard.process(exec_event(["tool", "alpha"], time="2024-05-01T12:00:59Z"))
    later = guard.process(exec_event(["tool", "alpha"], time="2024-05-01T12:01:01Z"))
    other_pid = guard.process(exec_event(["tool", "alpha"], pid=43))
    other_evidence = guard.process(exec_event(["tool", "beta"]))
    assert [len(x) for x in (first, again, later, other_pid, other_evidence)] == [1, 0, 1, 1, 1]


def test_events_without_time_or_pid_are_never_deduplicated(tmp_path):
    guard = engine(tmp_path)
    event = {"kind": "exec", "process": {"argv": ["alpha"]}, "sandbox": {"name": "unknown"}}
    assert len(guard.process(event)) == 1 and len(guard.process(event)) == 1


def test_rule_allow_condition_by_sandbox_glob(tmp_path):
    assert engine(tmp_path).process(exec_event(["alpha"], sandbox="sandbox-trusted-7")) == []
    assert engine(tmp_path).process(exec_event(["alpha"], comm="ignored")) == []


def test_config_allowlist_per_sandbox_and_rule(tmp_path):
    config = {"allow": [{"rules": ["test.*"], "sandboxes": ["sandbox-a"]}, {"rules": ["other.*"], "ancestors": ["/sbin/init"]}]}
    guard = engine(tmp_path, config)
    assert guard.process(exec_event(["alpha"])) == []
    assert len(guard.process(exec_event(["alpha"], sandbox="sandbox-b"))) == 1


def test_disabled_rule_does_not_run(tmp_path):
    rules = load_rules([write(tmp_path, "r.yaml", KEYWORD_RULE), write(tmp_path, "off.yaml", "rules: [{id: test.keyword, enabled: false}]")])
    assert DetectionEngine(rules).process(exec_event(["alpha"])) == []


def test_event_time_keeps_nanoseconds():
    assert event_time_ns("1970-01-01T00:00:01.000000002Z") == 1_000_000_002
    assert event_time_ns("1970-01-01T01:00:00+01:00") == 0
    assert event_time_ns("yesterday") is None


def test_an_empty_sandbox_allowlist_allows_nothing():
    from ebpfguard.detect.conditions import compile_globs

    assert compile_globs([]).match("sandbox-1") is False
    assert compile_globs([]).match("") is False
    assert compile_globs(["sandbox-*"]).match("sandbox-1")


def no_files(event, path):
    return ReadResult(None, "missing")


@pytest.mark.parametrize("argv", [
    ["./svc", "-c", "/tmp/c.json"],  # a miner's config named on the command line
    ["/tmp/.x/svc"],  # a bare binary outside the system's directories: its config.json
    ["ssh", "-N", "tunnel@203.0.113.7"],  # an ssh client: its config files
    ["sh", "-c", "exec ssh -N tunnel@203.0.113.7"],  # the same, wrapped
])
def test_an_exec_whose_detection_reads_the_processes_files_may_wait(argv):
    engine = DetectionEngine(load_rules(), read_file=no_files)
    assert engine.may_read_files(exec_event(argv))


@pytest.mark.parametrize("argv", [["/bin/true"], ["make", "-j8"], ["xmrig", "-o", "pool.example.net:3333"]])
def test_an_exec_scored_on_its_command_line_alone_cannot_wait(argv):
    engine = DetectionEngine(load_rules(), read_file=no_files)
    event = exec_event(argv)
    assert not engine.may_read_files(event)
    engine.process(event)
    assert not engine.may_read_files(exec_event(argv))  # and once remembered quiet, the same


def test_no_event_may_wait_where_detection_reads_no_files():
    engine = DetectionEngine(load_rules())  # replay: no reader
    assert not engine.may_read_files(exec_event(["ssh", "-N", "tunnel@203.0.113.7"]))
    assert not engine.may_read_files(exec_event(["./svc", "-c", "/tmp/c.json"]))


def test_a_condition_over_a_disabled_miner_rules_score_may_read_its_config_too(tmp_path):
    rules = load_rules([write(tmp_path, "d.yaml", MINER_SCORE_CONDITION_ONLY)])
    assert DetectionEngine(rules, read_file=no_files).may_read_files(exec_event(["./svc", "-c", "/tmp/c.json"]))
