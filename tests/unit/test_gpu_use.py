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


def test_a_nvidia_smi_query_and_its_device_opens_are_telemetry_not_alerts():
    query = ["nvidia-smi", "--query-gpu=power.draw,power.limit", "--format=csv"]
    assert alerts({"kind": "exec", "argv": query, "filename": "/usr/bin/nvidia-smi", "sandbox": {"name": "sandbox-3"}}) == []
    opened = {"kind": "open", "filename": "/dev/nvidiactl", "retval": 3, "sandbox": {"name": "sandbox-3"},
              "process": {"pid": 7, "exe": "/usr/bin/nvidia-smi", "argv": query}}
    assert alerts(opened) == []


def test_nvidia_smi_changing_power_or_clocks_is_medium():
    for change in (["-pl", "120"], ["--lock-gpu-clocks=1200,1200"], ["-i", "0", "-pm", "1"]):
        found = alerts({"kind": "exec", "argv": ["nvidia-smi", *change], "filename": "/usr/bin/nvidia-smi",
                        "sandbox": {"name": "sandbox-3"}})
        assert [a["severity"] for a in found] == ["medium"], change


def test_a_nvidia_smi_outside_the_system_directories_is_judged_as_any_program():
    found = alerts({"kind": "exec", "argv": ["nvidia-smi", "-L"], "filename": "/tmp/nvidia-smi",
                    "sandbox": {"name": "sandbox-3"}})
    assert [a["severity"] for a in found] == ["low"]
    opened = {"kind": "open", "filename": "/dev/nvidia0", "retval": 3, "sandbox": {"name": "sandbox-3"},
              "process": {"pid": 8, "exe": "/tmp/nvidia-smi", "argv": ["nvidia-smi", "-L"]}}
    assert [a["severity"] for a in alerts(opened)] == ["medium"]


def test_other_device_nodes_from_the_open_probe_are_not_gpu_use():
    assert alerts({"kind": "open", "filename": "/dev/cpu/0/msr", "retval": 3, "sandbox": {"name": "sandbox-3"}}) == []


def nvml_poll(second: int, *, pid=4200, gpu=0, memory=2 << 30, busy=0.0):
    """A `gpu` event as the agent writes one per NVML poll: the numbers change every time."""
    return {"kind": "gpu", "time": f"2026-11-29T12:00:{second:02d}Z", "sandbox": {"name": "sandbox-7"},
            "process": {"pid": pid}, "gpu": {"index": gpu}, "memory_bytes": memory + second,
            "utilization_ratio": 0.99, "busy_seconds": busy}


def test_one_alert_per_process_and_gpu_however_the_numbers_change_poll_to_poll():
    engine = DetectionEngine(ENGINE_RULES)
    fired = [a for second in range(0, 50, 5) for a in engine.process(nvml_poll(second))]
    assert [a["severity"] for a in fired] == ["medium"]


def test_a_rise_in_severity_alerts_again_and_a_fall_does_not():
    engine = DetectionEngine(ENGINE_RULES)
    polls = [nvml_poll(0), nvml_poll(5, busy=60.0), nvml_poll(10, busy=65.0), nvml_poll(15)]
    fired = [a["severity"] for event in polls for a in engine.process(event)]
    assert fired == ["medium", "high"]


def test_other_gpus_and_other_processes_alert_on_their_own():
    engine = DetectionEngine(ENGINE_RULES)
    polls = [nvml_poll(0), nvml_poll(5, gpu=1), nvml_poll(10, pid=4300), nvml_poll(15)]
    fired = [(a["process"]["pid"], a["evidence"]["gpu"]) for event in polls for a in engine.process(event)]
    assert fired == [(4200, 0), (4200, 1), (4300, 0)]
