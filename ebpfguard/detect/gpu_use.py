"""`gpu.use`: a sandbox using GPUs it was not given.

* an `open` of a GPU or accelerator device node (from the kernel's open probe);
* a `gpu` event (the agent's NVML poll): GPU memory held, and, at higher severity, a
  miner-like profile: the GPU kept near fully busy for a while with a small memory footprint
  (mining kernels hold a DAG or scratchpad of a few GiB at most; training holds far more);
* `nvidia-smi` / `rocm-smi` run inside a sandbox: a query (`-L`, `-q`, `--query-gpu=...`)
  is telemetry and raises nothing, nor do the device opens it makes to answer it; one that
  changes the GPU (power limit, clocks, persistence, compute mode: what miners tune) is
  medium, and a tool of that name run from outside the system directories is judged as any
  program (a low hint on its exec, its device opens alert).

Sandboxes that may use GPUs are listed in the rule's `allow` (sandbox globs); `host` never
alerts here. NVML findings of one process on one GPU are the same finding whatever the numbers
of the poll: one alert per (sandbox, pid, GPU) in the engine's de-duplication window, and
another only when the severity rises (memory held, then a miner's profile).
"""

from __future__ import annotations

from typing import Iterable

from ebpfguard.detect.execinfo import NoFindings, basename, exec_key, exec_succeeded, program_and_args, sandbox_name
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector


GPU_DEVICES = ("/dev/nvidia", "/dev/dri/", "/dev/kfd", "/dev/accel")


@detector("gpu.use", kinds=("open", "gpu", "exec"))
class GpuUse(Detector):
    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        self.probe_tools = frozenset(ctx.params.get("probe_tools", ()))
        self.tool_dirs = tuple(d.rstrip("/") + "/" for d in ctx.params.get("probe_tool_dirs", ()))
        self.changing_options = frozenset(ctx.params.get("probe_tool_changing_options", ()))
        self.busy_seconds = float(ctx.params.get("miner_busy_seconds", 60))
        self.small_memory = int(ctx.params.get("miner_max_memory_bytes", 6 << 30))
        self._quiet = NoFindings()

    def on_event(self, event: Event) -> Iterable[Finding]:
        if sandbox_name(event) == "host":
            return []
        kind = event.get("kind")
        if kind == "open":
            return self._device_open(event)
        if kind == "gpu":
            return self._gpu_held(event)
        return self._probe_tool(event)

    def _device_open(self, event: Event) -> list[Finding]:
        device = str(event.get("filename") or "")
        if not device.startswith(GPU_DEVICES):
            return []  # the open probe also reports other device nodes (miner.tuning's)
        process = event.get("process") or {}
        if self._tool_query(str(process.get("exe") or ""), [str(a) for a in process.get("argv") or ()][1:]):
            return []
        retval = event.get("retval", 0)
        opened = not isinstance(retval, int) or retval >= 0
        what = "opened" if opened else "tried to open"
        return [Finding(f"sandbox {what} GPU device {device}",
                        {"source": "open", "device": device, "retval": retval})]

    def _gpu_held(self, event: Event) -> list[Finding]:
        memory = int(event.get("memory_bytes") or 0)
        utilization = event.get("utilization_ratio")
        busy = float(event.get("busy_seconds") or 0.0)
        gpu = event.get("gpu") or {}
        evidence = {"source": "nvml", "gpu": gpu.get("index"), "memory_bytes": memory,
                    "utilization_ratio": utilization, "busy_seconds": busy}
        same_as = ("nvml", gpu.get("index"))
        if busy >= self.busy_seconds and memory <= self.small_memory:
            return [Finding(f"miner-like GPU profile: {busy:.0f}s near full use holding "
                            f"{memory >> 20} MiB on GPU {gpu.get('index')}",
                            {**evidence, "profile": "miner_like"}, severity="high", same_as=same_as)]
        if memory > 0:
            return [Finding(f"sandbox holds {memory >> 20} MiB on GPU {gpu.get('index')}", evidence,
                            same_as=same_as)]
        return []

    def _probe_tool(self, event: Event) -> list[Finding]:
        if not exec_succeeded(event):
            return []
        return self._quiet.findings(exec_key(event), lambda: self._probe_findings(event))

    def _probe_findings(self, event: Event) -> list[Finding]:
        program, args = program_and_args(event)
        if basename(program) not in self.probe_tools:
            return []
        path = str(event.get("filename") or (event.get("process") or {}).get("exe") or "")
        changing = sorted(self._changing(args))
        if changing:
            return [Finding(f"{program} changes GPU settings inside a sandbox ({' '.join(changing)})",
                            {"source": "exec", "tool": program}, severity="medium")]
        if not path.startswith("/") or path.startswith(self.tool_dirs):
            return []  # a query: telemetry (see the module docstring)
        return [Finding(f"{program} run from {path} inside a sandbox", {"source": "exec", "tool": program},
                        severity="low")]

    def _changing(self, args: list[str]) -> set[str]:
        return {a.split("=", 1)[0] for a in args if a.split("=", 1)[0] in self.changing_options}

    def _tool_query(self, exe: str, args: list[str]) -> bool:
        """Whether a process is the system's GPU tool answering a query (changes nothing)."""
        return (basename(exe) in self.probe_tools and exe.startswith(self.tool_dirs)
                and not self._changing(args))
