"""GPU usage per sandbox from fixed NVML results (no GPU needed), through the real enricher
over a host made of temporary directories."""

from types import SimpleNamespace

import pytest

from ebpfguard.config import load_config
from ebpfguard.enrich.enricher import Enricher
from ebpfguard.enrich.gpu import GpuWatcher, cgroup_path_of_pid, sample_processes
from ebpfguard.enrich.pods import PodDirectory
from enrich_env import HOST_NETNS, FixedClock, fake_host

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


POD_UID = "0b7c4d2e-1f3a-4b5c-8d9e-0f1a2b3c4d5e"
POD_CGROUP = (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID.replace('-', '_')}.slice"
              "/cri-containerd-4c1b5f0e9a7d.scope")
CGROUP_OF_PID = {4100: "/training-job", 4200: "/sandbox-7/agent-x", 4300: POD_CGROUP}


@pytest.fixture
def host(tmp_path):
    """The fake host, with the NVML processes' cgroups and /proc/<pid>/cgroup, and a pod log
    directory that names the pod of pid 4300."""
    host = fake_host(tmp_path)
    for pid, path in CGROUP_OF_PID.items():
        (host.cgroups / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (host.proc / str(pid)).mkdir()
        (host.proc / str(pid) / "cgroup").write_text(f"12:memory:/whatever\n0::{path}\n")
    (tmp_path / "pods" / f"rl-sandboxes_agent-run-41_{POD_UID}").mkdir(parents=True)
    return host


def watcher_on(host, nvml=TWO_GPUS, **kwargs) -> GpuWatcher:
    """A GpuWatcher whose samples go through the enricher as the agent wires it."""
    enricher = Enricher("node-1", host.procs, host.index, load_config()["sandbox"], FixedClock(),
                        pods=PodDirectory(str(host.proc.parent / "pods")), host_netns_cookie=HOST_NETNS)
    return GpuWatcher(nvml, lambda s: enricher.gpu_event(s, cgroup_path_of_pid(s["pid"], str(host.proc))), **kwargs)


def test_gpu_events_and_usage_name_sandboxes_and_pods_as_every_other_event(host):
    watcher = watcher_on(host)
    events = {e["process"]["pid"]: e for e in watcher.poll_if_due()}
    assert {pid: e["sandbox"]["name"] for pid, e in events.items()} == {
        4100: "host", 4200: "sandbox-7", 4300: "rl-sandboxes/agent-run-41"}
    assert events[4300]["sandbox"]["runtime"] == "kubernetes" and events[4300]["kind"] == "gpu"
    usage = {(u.sandbox, u.gpu_index): u for u in watcher.usage}
    assert set(usage) == {("host", 0), ("sandbox-7", 0), ("rl-sandboxes/agent-run-41", 1)}
    assert usage[("sandbox-7", 0)].memory_bytes == 2 * GIB
    assert usage[("sandbox-7", 0)].utilization_ratio == 0.99
    assert usage[("rl-sandboxes/agent-run-41", 1)].pids == (4300,)


def test_a_process_gone_before_its_cgroup_is_read_is_in_sandbox_unknown(host):
    (host.proc / "4200" / "cgroup").unlink()
    events = {e["process"]["pid"]: e for e in watcher_on(host).poll_if_due()}
    assert events[4200]["sandbox"]["name"] == "unknown"


def test_cgroup_path_of_a_vanished_process_is_none(tmp_path):
    assert cgroup_path_of_pid(999, str(tmp_path)) is None


def test_busy_seconds_grow_while_a_process_keeps_the_gpu_busy(host):
    now = [0.0]
    watcher = watcher_on(host, interval_s=5, clock=lambda: now[0])
    first = {e["process"]["pid"]: e for e in watcher.poll_if_due()}
    now[0] = 90.0
    later = {e["process"]["pid"]: e for e in watcher.poll_if_due()}
    assert first[4200]["busy_seconds"] == 0.0 and later[4200]["busy_seconds"] == 90.0
    assert later[4100]["busy_seconds"] == 0.0  # 55%: not busy
    usage = watcher.usage
    assert watcher.poll_if_due() == [] and watcher.usage == usage  # not due again yet
