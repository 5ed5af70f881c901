"""gpu.use through the engine with the shipped rules."""

from ebpfguard.detect.engine import DetectionEngine, load_rules

ENGINE_RULES = load_rules()


def alerts(event, rules=ENGINE_RULES):
    return [a for a in DetectionEngine(rules).process(event) if a["rule"] == "gpu.use"]


def test_sandbox_opening_a_gpu_device_is_flagged():
    found = alerts({"kind": "open", "filename": "/dev/nvidia0", "retval": 3, "sandbox": {"name": "sandbox-1"}})
    assert len(found) == 1 and found[0]["evidence"]["device"] == "/dev/nvidia0"
    assert found[0]["severity"] == "medium"


def test_host_opening_a_gpu_is_not_an_alert():
    assert alerts({"kind": "open", "filename": "/dev/nvidia0", "retval": 3, "sandbox": {"name": "host"}}) == []


def test_allowed_sandbox_is_not_an_alert(tmp_path):
    user = tmp_path / "gpu.yaml"
    user.write_text("rules:\n  - id: gpu.use\n    allow: {sandboxes: ['sandbox-train-*']}\n")
    event = {"kind": "open", "filename": "/dev/dri/renderD128", "retval": 4, "sandbox": {"name": "sandbox-train-3"}}
    assert alerts(event, load_rules([user])) == []
    assert len(alerts({**event, "sandbox": {"name": "sandbox-other"}}, load_rules([user]))) == 1


def test_miner_like_gpu_profile_is_high_and_big_training_memory_is_medium():
    miner = {"kind": "gpu", "sandbox": {"name": "sandbox-2"}, "gpu": {"index": 0}, "memory_bytes": 2 << 30,
             "utilization_ratio": 0.99, "busy_seconds": 120.0}
    training = {**miner, "memory_bytes": 70 << 30}
    assert alerts(miner)[0]["severity"] == "high" and alerts(miner)[0]["evidence"]["profile"] == "miner_like"
    assert alerts(training)[0]["severity"] == "medium"


def test_nvidia_smi_in_a_sandbox_is_a_low_hint():
    found = alerts({"kind": "exec", "argv": ["nvidia-smi", "-L"], "filename": "/usr/bin/nvidia-smi",
                    "sandbox": {"name": "sandbox-3"}})
    assert [a["severity"] for a in found] == ["low"]
