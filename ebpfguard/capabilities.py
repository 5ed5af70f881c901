"""The Linux capabilities the agent needs, and which of them this process lacks."""

from __future__ import annotations

from pathlib import Path

CAPABILITY_BITS = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_RESOURCE": 24,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}

# What each is for. CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON on every kernel.
REQUIRED = {
    "CAP_BPF": "load BPF programs and maps",
    "CAP_PERFMON": "attach tracepoints and read kernel memory from BPF",
}


def effective_capabilities(proc_status: str) -> int:
    """The CapEff mask from /proc/<pid>/status text."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_capabilities(cap_eff: int) -> dict[str, str]:
    """Required capabilities absent from `cap_eff`, with what each is needed for."""
    if cap_eff & (1 << CAPABILITY_BITS["CAP_SYS_ADMIN"]):
        return {}
    return {name: why for name, why in REQUIRED.items() if not cap_eff & (1 << CAPABILITY_BITS[name])}


def missing_here() -> dict[str, str]:
    """missing_capabilities() for this process."""
    return missing_capabilities(effective_capabilities(Path("/proc/self/status").read_text()))
