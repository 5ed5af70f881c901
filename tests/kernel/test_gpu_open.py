"""GPU device opens from the kernel, on a host without a GPU: a device node the test makes."""

import os
import uuid

import pytest
from conftest import alert_for


@pytest.fixture
def gpu_like_device():
    """A character device named like an NVIDIA GPU node (it is /dev/null underneath)."""
    path = f"/dev/nvidia-ebpfguard-{uuid.uuid4().hex[:8]}"
    os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
    yield path
    os.unlink(path)


def opened(path, cg):
    return lambda e: e["kind"] == "open" and e["filename"] == path and e["sandbox"]["cgroup"] == cg.rel


def test_sandbox_opening_a_gpu_device_yields_the_event_and_an_alert(agent, make_cgroup, gpu_like_device):
    cg = make_cgroup("sandbox-")
    cg.run(["sh", "-c", f"exec head -c 1 {gpu_like_device}"], check=True)
    event = agent.wait_for(opened(gpu_like_device, cg))
    assert event["retval"] >= 0 and event["process"]["comm"] == "head"
    assert event["process"]["ancestry"][0]["comm"] in ("sh", "python", "python3")
    alert = agent.wait_for(alert_for("gpu.use", opened(gpu_like_device, cg)))
    assert alert["sandbox"]["name"] == cg.path.name and alert["evidence"]["device"] == gpu_like_device


def test_allowlisted_sandbox_opening_a_gpu_raises_no_alert(agent, make_cgroup, gpu_like_device):
    cg = make_cgroup("sandbox-gpu-")
    cg.run(["head", "-c", "1", gpu_like_device], check=True)
    agent.wait_for(opened(gpu_like_device, cg))
    other = make_cgroup("sandbox-")
    other.run(["head", "-c", "1", gpu_like_device], check=True)  # later, and alerting
    agent.wait_for(alert_for("gpu.use", opened(gpu_like_device, other)))
    assert not [e for e in agent.events() if e["kind"] == "alert" and e["sandbox"]["cgroup"] == cg.rel]


def test_other_opens_are_not_reported(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    cg.run(["head", "-c", "1", "/dev/null"], check=True)
    cg.run(["head", "-c", "1", "/dev/nvidia-no-such-device-ebpfguard"], capture_output=True)
    agent.wait_for(lambda e: e["kind"] == "open" and e["filename"] == "/dev/nvidia-no-such-device-ebpfguard")
    assert not [e for e in agent.events() if e["kind"] == "open" and e["filename"] == "/dev/null"]
