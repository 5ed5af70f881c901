"""agent.flooded through the engine with the shipped rules, from `summary` events."""

from ebpfguard.detect.engine import DetectionEngine, load_rules


def summary(sandbox="sandbox-flood", held_back=None, lost=None, time="2026-11-29T22:00:00.000000000Z"):
    return {"kind": "summary", "time": time, "sandbox": {"name": sandbox, "cgroup": f"/{sandbox}", "cgroup_id": 42},
            "process": {"pid": None}, "held_back": held_back or {}, "lost": lost or {}, "window_s": 1.0}


def test_a_sandbox_whose_records_were_lost_is_named():
    [alert] = DetectionEngine(load_rules()).process(summary(lost={"net": 3}))
    assert alert["rule"] == "agent.flooded" and alert["severity"] == "high"
    assert alert["sandbox"]["name"] == "sandbox-flood"
    assert alert["evidence"]["lost"] == {"net": 3} and alert["evidence"]["cgroup"] == "/sandbox-flood"


def test_a_sandbox_far_over_the_rate_limit_is_named_and_a_busy_one_is_not():
    engine = DetectionEngine(load_rules())
    assert engine.process(summary(held_back={"connect": 200, "socket": 200})) == []
    [alert] = engine.process(summary(held_back={"connect": 40000, "socket": 40000}))
    assert alert["evidence"]["held_back"] == {"connect": 40000, "socket": 40000}


def test_the_host_is_named_only_for_lost_records():
    engine = DetectionEngine(load_rules())
    assert engine.process(summary("host", held_back={"connect": 90000})) == []
    assert len(engine.process(summary("host", lost={"flow": 1}))) == 1


def test_one_alert_per_sandbox_until_repeat_after_s():
    engine = DetectionEngine(load_rules())
    assert len(engine.process(summary(lost={"net": 3}))) == 1
    assert engine.process(summary(lost={"net": 9}, time="2026-11-29T22:00:01.000000000Z")) == []
    assert len(engine.process(summary("sandbox-other", lost={"net": 1}))) == 1
    assert len(engine.process(summary(lost={"net": 1}, time="2026-11-29T22:06:00.000000000Z"))) == 1


def test_malformed_counts_in_a_replayed_summary_are_ignored():
    engine = DetectionEngine(load_rules())
    assert engine.process(summary(lost={"net": "many", "flow": True, "x": -5})) == []
