"""GPU usage per sandbox from fixed NVML results (no GPU needed)."""

from types import SimpleNamespace

import pytest

from ebpfguard.enrich.gpu import GpuWatcher, cgroup_path_of_pid, sample_processes, usage_by_sandbox

GIB = 1 << 30


class RecordedNvml:
    """NVML's API shape (nvidia-ml-py's calls, structures and units: usedGpuMemory in bytes,
    smUtil in percent, NVMLError for "Not Supported"/"Not Found"), answering with fixed
    results. The driver is what is replaced; the code under test is ours."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus):
        self.gpus = gpus

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, gpu):
        return gpu["uuid"]

    def nvmlDeviceGetName(self, gpu):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetComputeRunningProcesses(self, gpu):
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem) for pid, mem in gpu["compute"]]

    def nvmlDeviceGetGraphicsRunningProcesses(self, gpu):
        raise self.NVMLError("Not Supported")

    def nvmlDeviceGetProcessUtilization(self, gpu, since):
        if not gpu["util"]:
            raise self.NVMLError("Not Found")
        return [SimpleNamespace(pid=pid, smUtil=util) for pid, util in gpu["util"]]


TWO_GPUS = RecordedNvml([
    {"uuid": "GPU-6c3b2a39-0f5c-6b4e-8d57-2d1bb3f0a001", "compute": [(4100, 70 * GIB), (4200, 2 * GIB)],
     "util": [(4100, 55), (4200, 99)]},
    {"uuid": "GPU-6c3b2a39-0f5c-6b4e-8d57-2d1bb3f0a002", "compute": [(4300, 512 << 20)], "util": []},
])


@pytest.fixture
def proc(tmp_path):
    for pid, path in {4100: "/training-job", 4200: "/sandbox-7/agent-x", 4300: "/sandbox-9"}.items():
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_text(f"12:memory:/whatever\n0::{path}\n")
    return tmp_path


def test_samples_carry_memory_and_utilisation_per_process_and_gpu():
    samples = sample_processes(TWO_GPUS)
    by_pid = {s.pid: s for s in samples}
    assert by_pid[4100].memory_bytes == 70 * GIB and by_pid[4100].sm_utilization == 0.55
    assert by_pid[4300].gpu_index == 1 and by_pid[4300].sm_utilization is None
    assert by_pid[4200].gpu_uuid.endswith("a001")


def test_usage_is_attributed_to_sandboxes_through_proc_cgroup(proc):
    watcher = GpuWatcher(TWO_GPUS, {"matchers": ["pattern"], "patterns": ["sandbox-*"]}, proc_root=str(proc))
    usage = {(u.sandbox, u.gpu_index): u for u in usage_by_sandbox(sample_processes(TWO_GPUS), watcher.sandbox_of_pid)}
    assert usage[("sandbox-7", 0)].memory_bytes == 2 * GIB
    assert usage[("sandbox-7", 0)].utilization_ratio == 0.99
    assert usage[("host", 0)].memory_bytes == 70 * GIB
    assert usage[("sandbox-9", 1)].pids == (4300,)


def test_cgroup_path_of_a_vanished_process_is_none(tmp_path):
    assert cgroup_path_of_pid(999, str(tmp_path)) is None


def test_busy_seconds_grow_while_a_process_keeps_the_gpu_busy(proc):
    now = [0.0]
    watcher = GpuWatcher(TWO_GPUS, {"matchers": ["pattern"], "patterns": ["sandbox-*"]},
                         interval_s=5, proc_root=str(proc), clock=lambda: now[0])
    first = {e["pid"]: e for e in watcher.poll_if_due()}
    now[0] = 90.0
    later = {e["pid"]: e for e in watcher.poll_if_due()}
    assert first[4200]["busy_seconds"] == 0.0 and later[4200]["busy_seconds"] == 90.0
    assert later[4100]["busy_seconds"] == 0.0  # 55%: not busy
    assert watcher.poll_if_due() == []  # not due again yet
