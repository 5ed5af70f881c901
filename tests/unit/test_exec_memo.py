"""Exec rules remember command lines they found nothing in (execinfo.NoFindings): a repeated
exec gets the answer a first one gets, alerts are never served from memory, and whatever a
rule reads beyond the exec itself (a config file) is read again each time."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.execinfo import MAX_KEY_ARGV_CHARS, NoFindings, exec_key
from ebpfguard.detect.filereader import ReadResult

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
XMR = "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD"


def corpus_execs() -> list[dict]:
    events = []
    for name in ("exec_miners.jsonl", "exec_tunnels.jsonl", "miner_tuning.jsonl", "user_rules_stream.jsonl"):
        for line in (CORPUS / name).read_text().splitlines():
            event = json.loads(line)
            if event.get("kind") == "exec":
                event.pop("expect", None)
                events.append(event)
    return events


def as_live(event: dict, pid: int) -> dict:
    """The corpus line as the enricher writes it: argv under `process`, a pid and a time."""
    live = copy.deepcopy(event)
    process = live.setdefault("process", {})
    process.setdefault("argv", live.pop("argv", []))
    process.update(pid=pid, comm=process.get("comm") or "x", argv_truncated=False)
    live["time"] = f"2026-11-30T04:00:00.{pid:09d}Z"
    live.setdefault("retval", 0)
    return live


def answers(alerts: list[dict]) -> list[tuple]:
    return sorted((a["rule"], a["summary"], json.dumps(a["evidence"], sort_keys=True)) for a in alerts)


def test_every_corpus_exec_seen_again_gets_the_answer_it_got_first_and_a_fresh_engine_gives():
    engine = DetectionEngine(load_rules())
    events = corpus_execs()
    assert len(events) > 400
    first = [answers(engine.process(as_live(event, 1000 + i))) for i, event in enumerate(events)]
    again = [answers(engine.process(as_live(event, 5000 + i))) for i, event in enumerate(events)]
    alone = [answers(DetectionEngine(load_rules()).process(as_live(event, 9000 + i)))
             for i, event in enumerate(events[:60])]
    assert again == first
    assert alone == first[:60]
    # Not vacuous: the corpus holds both alerting and quiet command lines.
    alerting = sum(1 for found in first if found)
    assert alerting > 200 and len(first) - alerting > 100


def test_an_alerting_exec_is_judged_again_each_time_and_shares_no_evidence():
    engine = DetectionEngine(load_rules())
    argv = ["./x", "-o", "stratum+tcp://pool.minexmr.com:4444", "-u", XMR]
    one = engine.process(as_live({"kind": "exec", "argv": argv}, 1))
    two = engine.process(as_live({"kind": "exec", "argv": argv}, 2))
    assert [a["rule"] for a in one] == [a["rule"] for a in two] == ["miner.exec"]
    assert one[0]["evidence"] is not two[0]["evidence"]
    assert one[0]["evidence"]["hints"] is not two[0]["evidence"]["hints"]


def test_a_config_file_is_read_again_for_the_same_command_line():
    files = {"config.json": b'{"note": "nothing here"}'}
    engine = DetectionEngine(load_rules(), read_file=lambda event, path:
                             ReadResult(files[path]) if path in files else ReadResult(None, "missing"))
    exec_of = {"kind": "exec", "argv": ["./kworker", "-c", "config.json"]}
    assert engine.process(as_live(exec_of, 1)) == []
    files["config.json"] = json.dumps({"pools": [{"url": "stratum+tcp://pool.hashvault.pro:443", "user": XMR}]}).encode()
    assert [a["rule"] for a in engine.process(as_live(exec_of, 2))] == ["miner.exec"]


def test_the_key_tells_apart_everything_a_rule_reads_and_nothing_else():
    base = as_live({"kind": "exec", "argv": ["/bin/true", "--flag"], "filename": "/bin/true"}, 1)
    same = dict(base, time="2026-11-30T05:00:00Z", process=dict(base["process"], pid=2, uid=7))
    assert exec_key(base) == exec_key(same) is not None
    variants = [
        dict(base, filename="/tmp/true"),
        dict(base, retval=-2),
        dict(base, argv_anomalies=["changed_after_entry"]),
        dict(base, sandbox={"name": "host"}),
        dict(base, process=dict(base["process"], exe="/tmp/x")),
        dict(base, process=dict(base["process"], comm="kworker/0:1")),
        dict(base, process=dict(base["process"], argv=["/bin/true", "--flag", ""])),
        dict(base, process=dict(base["process"], argv_truncated=True)),
    ]
    assert len({exec_key(v) for v in variants} | {exec_key(base)}) == len(variants) + 1


def test_odd_shapes_and_long_command_lines_are_not_remembered():
    odd = [
        {"kind": "exec", "process": {"argv": [1, "x"]}},
        {"kind": "exec", "process": {"argv": ("a", "b")}},
        {"kind": "exec", "process": {"argv": ["a"], "argv_truncated": 1}},
        {"kind": "exec", "process": {"argv": ["a"]}, "retval": True},
        {"kind": "exec", "process": "not an object"},
        {"kind": "exec", "process": {"argv": ["a" * (MAX_KEY_ARGV_CHARS + 1)]}},
    ]
    assert [exec_key(event) for event in odd] == [None] * len(odd)
    memo = NoFindings()
    memo.add(None)
    assert None not in memo


def test_no_findings_holds_at_most_its_capacity():
    memo = NoFindings(capacity=3)
    for n in range(10):
        memo.add(("argv", n))
        assert len(memo._keys) <= 3
    assert ("argv", 9) in memo and ("argv", 0) not in memo
