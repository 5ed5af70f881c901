"""GPU use per sandbox, from the NVIDIA driver (NVML), where it is present.

The kernel's open probe sees which process opens a GPU device; NVML says who holds GPU memory
and compute now. Each NVML sample becomes a `gpu` event through the enricher the kernel's
events go through (its sandbox from /proc/<pid>/cgroup, pods named the same way), and the
per-sandbox usage behind the GPU metrics is summed from those same events, so an alert, an
event and a metric name one sandbox alike. Without NVML (no driver, or no nvidia-ml-py) this
module reports why, once, and the agent carries on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional


@dataclass(frozen=True)
class GpuProcessSample:
    """One process on one GPU at one moment, as NVML reports it."""

    gpu_index: int
    gpu_uuid: str
    gpu_name: str
    pid: int
    memory_bytes: int
    sm_utilization: Optional[float]  # 0..1 over NVML's last sampling window; None if unknown


@dataclass(frozen=True)
class SandboxGpuUsage:
    sandbox: str
    gpu_index: int
    memory_bytes: int
    utilization_ratio: float
    pids: tuple[int, ...]


def load_nvml() -> tuple[Optional[Any], str]:
    """(the initialised pynvml module, "") or (None, why it is unavailable)."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError subclasses per cause
        return None, f"NVML could not start: {exc}"
    return pynvml, ""


def sample_processes(nvml: Any, since_us: int = 0) -> list[GpuProcessSample]:
    """Every compute and graphics process on every GPU, with memory and SM utilisation."""
    samples = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        name = _text(nvml.nvmlDeviceGetName(handle))
        utilization = _process_utilization(nvml, handle, since_us)
        memory: dict[int, int] = {}
        for getter in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
            try:
                for proc in getter(handle):
                    used = proc.usedGpuMemory if isinstance(proc.usedGpuMemory, int) else 0
                    memory[proc.pid] = max(memory.get(proc.pid, 0), used)
            except nvml.NVMLError:
                continue
        for pid in sorted(set(memory) | set(utilization)):
            samples.append(GpuProcessSample(index, uuid, name, pid, memory.get(pid, 0), utilization.get(pid)))
    return samples


def _process_utilization(nvml: Any, handle: Any, since_us: int) -> dict[int, float]:
    try:
        return {s.pid: s.smUtil / 100.0 for s in nvml.nvmlDeviceGetProcessUtilization(handle, since_us)}
    except nvml.NVMLError:  # NOT_FOUND when no process ran in the window; unsupported on some GPUs
        return {}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cgroup_path_of_pid(pid: int, proc_root: str = "/proc") -> Optional[str]:
    """The cgroup v2 path of a process (the `0::` line of /proc/<pid>/cgroup)."""
    try:
        text = Path(proc_root, str(pid), "cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def usage_by_sandbox(events: Iterable[Mapping]) -> list[SandboxGpuUsage]:
    """Enriched `gpu` events summed per (sandbox, GPU): memory added up, utilisation added up
    (capped at 1)."""
    memory: dict = defaultdict(int)
    utilization: dict = defaultdict(float)
    pids: dict = defaultdict(list)
    for event in events:
        key = (event["sandbox"]["name"], event["gpu"]["index"])
        memory[key] += event["memory_bytes"]
        utilization[key] += event["utilization_ratio"] or 0.0
        pids[key].append(event["process"]["pid"])
    return [SandboxGpuUsage(sandbox, gpu, memory[(sandbox, gpu)], min(1.0, utilization[(sandbox, gpu)]),
                            tuple(pids[(sandbox, gpu)]))
            for sandbox, gpu in sorted(memory)]


# An NVML sample (a dict: pid, gpu, memory_bytes, utilization_ratio, busy_seconds) -> the
# complete `gpu` event, as the enricher makes it.
EnrichSample = Callable[[dict], dict]


class GpuWatcher:
    """Polls NVML on a timer; gives each poll's samples to the enricher as `gpu` events for
    the detectors, with how long each process has kept its GPU busy, and keeps the latest
    per-sandbox usage of those events for the metrics."""

    def __init__(self, nvml: Any, enrich: EnrichSample, interval_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.nvml = nvml
        self.enrich = enrich
        self.interval_s = interval_s
        self.clock = clock
        self.usage: list[SandboxGpuUsage] = []
        self._busy_since: dict[tuple[int, int], float] = {}
        self._next_poll = 0.0

    def poll_if_due(self) -> list[dict]:
        """The `gpu` events of a poll, when one is due (else none; usage stays as it was)."""
        now = self.clock()
        if now < self._next_poll:
            return []
        self._next_poll = now + self.interval_s
        events = [self.enrich(sample) for sample in self.samples_at(sample_processes(self.nvml), now)]
        self.usage = usage_by_sandbox(events)
        return events

    def samples_at(self, samples: list[GpuProcessSample], now: float) -> list[dict]:
        """One sample per process and GPU each poll, with how long it has kept the GPU busy."""
        out, current = [], set()
        for s in samples:
            key = (s.pid, s.gpu_index)
            current.add(key)
            busy = (s.sm_utilization or 0.0) >= 0.9
            if busy:
                self._busy_since.setdefault(key, now)
            else:
                self._busy_since.pop(key, None)
            out.append({
                "pid": s.pid,
                "gpu": {"index": s.gpu_index, "uuid": s.gpu_uuid, "name": s.gpu_name},
                "memory_bytes": s.memory_bytes,
                "utilization_ratio": s.sm_utilization,
                "busy_seconds": round(now - self._busy_since[key], 1) if busy else 0.0,
            })
        for gone in set(self._busy_since) - current:
            del self._busy_since[gone]
        return out
