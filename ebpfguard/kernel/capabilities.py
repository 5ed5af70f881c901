"""The Linux capabilities the agent needs, and which of them this process lacks.

Found by running the agent under `setpriv` with reduced sets (tests/kernel/test_capabilities.py
keeps it true): without CAP_BPF or CAP_PERFMON nothing loads; without CAP_NET_ADMIN the
cgroup/connect programs are refused (EPERM); without CAP_SYS_PTRACE the executables of other
users' processes (/proc/<pid>/exe) and their files (/proc/<pid>/root) cannot be read; without
CAP_DAC_READ_SEARCH open_by_handle_at() refuses cgroup ids (every new cgroup then costs a
walk of the whole tree) and sandbox files readable only by their owner stay unread.
Not needed: CAP_SYS_RESOURCE (BPF memory is charged to the cgroup since Linux 5.11, not to
RLIMIT_MEMLOCK) and CAP_SYS_ADMIN (only to mount tracefs where nothing has).
deploy/systemd/ebpfguard.service and deploy/kubernetes/daemonset.yaml grant exactly these.
"""

from __future__ import annotations

from pathlib import Path

CAPABILITY_BITS = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_NET_ADMIN": 12,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}

# What each is for.
REQUIRED = {
    "CAP_BPF": "load BPF programs and maps",
    "CAP_PERFMON": "attach tracepoints and read kernel memory from BPF",
    "CAP_NET_ADMIN": "load and link the cgroup connect programs",
    "CAP_SYS_PTRACE": "read other users' processes in /proc (executable, files they name)",
    "CAP_DAC_READ_SEARCH": "resolve cgroup ids by file handle and read files sandboxes name",
}

# Before CAP_BPF and CAP_PERFMON (Linux 5.8) CAP_SYS_ADMIN did their work; it still does,
# and the kernel accepts it for networking BPF programs too.
COVERED_BY_SYS_ADMIN = ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN")


def effective_capabilities(proc_status: str) -> int:
    """The CapEff mask from /proc/<pid>/status text."""
    for line in proc_status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def _has(cap_eff: int, name: str) -> bool:
    return bool(cap_eff & (1 << CAPABILITY_BITS[name]))


def missing_capabilities(cap_eff: int) -> dict[str, str]:
    """Required capabilities absent from `cap_eff`, with what each is needed for."""
    sys_admin = _has(cap_eff, "CAP_SYS_ADMIN")
    return {
        name: why for name, why in REQUIRED.items()
        if not _has(cap_eff, name) and not (sys_admin and name in COVERED_BY_SYS_ADMIN)
    }


def missing_here() -> dict[str, str]:
    """missing_capabilities() for this process."""
    return missing_capabilities(effective_capabilities(Path("/proc/self/status").read_text()))
