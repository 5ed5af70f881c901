"""`ebpfguard doctor`: what this kernel and host support, and what is missing."""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from typing import Callable, Optional

from ebpfguard.kernel.capabilities import REQUIRED, missing_here
from ebpfguard.kernel.load import PROBE_FAMILIES, tracefs_root
from ebpfguard.enrich.sandbox import cgroup_root_from_proc

SYS_BPF = 321  # x86-64; bpf() is 280 on arm64
BPF_MAP_CREATE = 0
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_RINGBUF = 27


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _bpf_map_create(map_type: int, key_size: int, value_size: int, max_entries: int) -> Optional[str]:
    """None when the kernel creates the map, else the error text."""
    nr = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), SYS_BPF)
    attr = (ctypes.c_uint32 * 30)()
    attr[0], attr[1], attr[2], attr[3] = map_type, key_size, value_size, max_entries
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(nr, BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        return os.strerror(ctypes.get_errno())
    os.close(fd)
    return None


def check_privileges() -> Check:
    missing = missing_here()
    if not missing:
        return Check("privileges", True, f"{', '.join(REQUIRED)} held")
    need = ", ".join(f"{cap} ({why})" for cap, why in missing.items())
    return Check("privileges", False, f"missing {need}", "run as root, or grant these capabilities")


def check_bpf_syscall() -> Check:
    err = _bpf_map_create(BPF_MAP_TYPE_ARRAY, 4, 8, 1)
    if err is None:
        return Check("bpf() syscall", True, "a BPF map was created")
    return Check("bpf() syscall", False, err, "needs CONFIG_BPF_SYSCALL and privileges; check kernel.unprivileged_bpf_disabled and seccomp")


def check_ring_buffer() -> Check:
    err = _bpf_map_create(BPF_MAP_TYPE_RINGBUF, 0, 0, 4096)
    if err is None:
        return Check("ring buffer", True, "BPF_MAP_TYPE_RINGBUF supported")
    return Check("ring buffer", False, err, "needs Linux 5.8 or newer")


def check_btf() -> Check:
    ok = os.path.exists("/sys/kernel/btf/vmlinux")
    return Check("BTF", ok, "/sys/kernel/btf/vmlinux present" if ok else "no /sys/kernel/btf/vmlinux",
                 "without it, argv past the exec probe's entry bounds (or in pages not faulted in) "
                 "is not read again from the new image's stack (docs/argv.md)", required=False)


def check_tracepoints() -> list[Check]:
    root = tracefs_root()
    if root is None:
        return [Check("tracefs", False, "not mounted", "mount -t tracefs nodev /sys/kernel/tracing (the agent does this itself when root)")]
    checks = [Check("tracefs", True, root)]
    for family, probe in PROBE_FAMILIES.items():
        for category, event in probe.tracepoints:
            ok = os.path.isdir(os.path.join(root, "events", category, event))
            checks.append(Check(f"tracepoint {category}:{event}", ok, f"{family} probe",
                                "" if ok else "needs CONFIG_FTRACE_SYSCALLS / a newer kernel"))
    return checks


def check_cgroup2() -> Check:
    root = cgroup_root_from_proc()
    if root:
        return Check("cgroup2 mount", True, root)
    return Check("cgroup2 mount", False, "no cgroup2 filesystem mounted", "mount -t cgroup2 none /sys/fs/cgroup (sandboxes are cgroup v2 subtrees)")


def check_kernel_headers(release: str = platform.release()) -> Check:
    build = f"/lib/modules/{release}/build"
    if not os.path.exists(os.path.join(build, "include")):
        return Check("kernel headers", False, f"{build} missing", "run the README's set-up (scripts/setup.sh), or install linux-headers-$(uname -r)")
    target = os.path.realpath(build)
    if release in os.path.basename(target) or release in target:
        return Check("kernel headers", True, f"exact: {target}")
    return Check("kernel headers", True, f"nearest available, linked: {target} (no exact headers for {release}; "
                 "safe for ebpfguard's tracepoint probes, which read no kernel struct by offset)")


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401  (the import is the check)
        from bcc.version import __version__ as version
    except ImportError as exc:
        return Check("bcc", False, str(exc), "apt install python3-bpfcc, and use a venv made with --system-site-packages")
    return Check("bcc", True, f"version {version}")


def check_nvml() -> Check:
    from ebpfguard.enrich.gpu import load_nvml

    nvml, why = load_nvml()
    if nvml is None:
        return Check("NVML (GPU usage)", False, why,
                     "optional: GPU device opens are still seen by the open probe", required=False)
    return Check("NVML (GPU usage)", True, f"{nvml.nvmlDeviceGetCount()} GPU(s)")


CHECKS: tuple[Callable[[], object], ...] = (
    check_privileges, check_bpf_syscall, check_ring_buffer, check_btf, check_tracepoints,
    check_cgroup2, check_kernel_headers, check_bcc, check_nvml,
)


def run_checks() -> list[Check]:
    out: list[Check] = []
    for check in CHECKS:
        result = check()
        out.extend(result if isinstance(result, list) else [result])
    return out


def can_run(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)
