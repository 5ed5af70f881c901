"""Loading: compile the probes in bpf/ with bcc, attach them, and drain their ring buffer.

The only module that talks to bcc. Probes submit records without waking us; `drain()` is
called on a short timer and hands each record's bytes to the consumer in one batch.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from ebpfguard.kernel.events import BPF_DIR, C
from ebpfguard.kernel.links import CgroupLink, link_to_cgroup


@dataclass(frozen=True)
class CgroupProgram:
    """A cgroup BPF program: its function in the source and where it attaches."""

    function: str
    prog_type: str    # a bcc.BPF program-type attribute name
    attach_type: str  # a bcc.BPFAttachType member name


@dataclass(frozen=True)
class ProbeFamily:
    source: str
    tracepoints: tuple[tuple[str, str], ...]
    cgroup_programs: tuple[CgroupProgram, ...] = ()


# The family names are the PROBE_* enum of bpf/events.h, lower-cased; they label losses
# and health. Tracepoints attach by bcc's naming (TRACEPOINT_PROBE); cgroup programs attach
# to the cgroup2 root through BPF links.
PROBE_FAMILIES: dict[str, ProbeFamily] = {
    "exec": ProbeFamily("exec.bpf.c", (
        ("syscalls", "sys_enter_execve"), ("syscalls", "sys_exit_execve"),
        ("syscalls", "sys_enter_execveat"), ("syscalls", "sys_exit_execveat"),
    )),
    "proc": ProbeFamily("proc.bpf.c", (
        ("task", "task_newtask"), ("sched", "sched_process_exit"),
        ("syscalls", "sys_enter_exit_group"),
    )),
    "net": ProbeFamily(
        "net.bpf.c",
        (("syscalls", "sys_enter_socket"), ("syscalls", "sys_exit_socket"),
         ("syscalls", "sys_enter_connect"), ("syscalls", "sys_exit_connect")),
        (CgroupProgram("cgroup__connect4", "CGROUP_SOCK_ADDR", "CGROUP_INET4_CONNECT"),
         CgroupProgram("cgroup__connect6", "CGROUP_SOCK_ADDR", "CGROUP_INET6_CONNECT")),
    ),
    "open": ProbeFamily("open.bpf.c", (
        ("syscalls", "sys_enter_openat"), ("syscalls", "sys_exit_openat"),
        ("syscalls", "sys_enter_openat2"), ("syscalls", "sys_exit_openat2"),
    )),
    "flow": ProbeFamily(
        "flow.bpf.c",
        (),
        (CgroupProgram("cgroup__sock_create", "CGROUP_SOCK", "CGROUP_INET_SOCK_CREATE"),
         CgroupProgram("cgroup_skb__egress", "CGROUP_SKB", "CGROUP_INET_EGRESS"),
         CgroupProgram("cgroup_skb__ingress", "CGROUP_SKB", "CGROUP_INET_INGRESS")),
    ),
}

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class ProbeError(Exception):
    """Probes that could not be compiled or attached; the message says why."""


def tracefs_root() -> Optional[str]:
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs() -> str:
    """The tracefs mount, mounting it on /sys/kernel/tracing when absent."""
    root = tracefs_root()
    if root:
        return root
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", b"/sys/kernel/tracing", b"tracefs", 0, None) != 0:
        raise ProbeError(f"tracefs is not mounted and mounting it failed: {os.strerror(ctypes.get_errno())}")
    return "/sys/kernel/tracing"


def tracepoint_has_field(tracefs: str, category: str, event: str, field: str) -> bool:
    try:
        with open(os.path.join(tracefs, "events", category, event, "format")) as f:
            return f" {field};" in f.read()
    except OSError:
        return False


# Headers with map calls: bcc rewrites map calls and makes tracepoint argument structs only
# in its main text, never in included files, so these are concatenated ahead of the sources
# (their include guards then make each family's `#include` a no-op).
SHARED_HEADERS = ("common.h", "response.h")


def program_text(families: tuple[str, ...] = tuple(PROBE_FAMILIES)) -> str:
    """The shared headers and the families' sources, concatenated."""
    sources = list(SHARED_HEADERS) + [PROBE_FAMILIES[f].source for f in families]
    return "".join((BPF_DIR / name).read_text() for name in sources)


def compile_flags(config: Mapping, tracefs: str) -> list[str]:
    """cflags: include path, ring size, and features found in this kernel's tracepoints."""
    pages = int(config["probes"]["ring_buffer_pages"])
    if pages <= 0 or pages & (pages - 1):
        raise ProbeError(f"probes.ring_buffer_pages must be a power of two, not {pages}")
    flags = [f"-I{BPF_DIR}", f"-DRINGBUF_PAGES={pages}"]
    # Response checks exist in the hooks only when they may act (bpf/response.h).
    if config.get("response", {}).get("mode") == "enforce":
        flags.append("-DRESPONSE_ENFORCE")
    if tracepoint_has_field(tracefs, "sched", "sched_process_exit", "group_dead"):
        flags.append("-DHAVE_GROUP_DEAD")
    # open(2) has no syscall of its own on arm64 (only openat)
    if os.path.isdir(os.path.join(tracefs, "events", "syscalls", "sys_enter_open")):
        flags.append("-DHAVE_SYS_OPEN")
    return flags


@dataclass
class ProbeSet:
    """The loaded, attached probes of every family."""

    bpf: object
    families: tuple[str, ...]
    links: list[CgroupLink] = field(default_factory=list)
    delivered: int = 0

    @classmethod
    def load(cls, config: Mapping, cgroup_root: str, on_record: Callable[[bytes], None]) -> "ProbeSet":
        """Compile and attach every probe family; records go to `on_record` on drain()."""
        from bcc import BPF, BPFAttachType  # the distro's python3-bpfcc: unit tests need no bcc

        tracefs = ensure_tracefs()
        families = tuple(PROBE_FAMILIES)
        try:
            bpf = BPF(text=program_text(families), cflags=compile_flags(config, tracefs))
        except Exception as exc:  # bcc raises bare Exception for compile and load failures
            raise ProbeError(f"loading the probes failed: {exc}") from None
        probes = cls(bpf, families)
        try:
            for family in families:
                for prog in PROBE_FAMILIES[family].cgroup_programs:
                    attach_type = getattr(BPFAttachType, prog.attach_type)
                    # bcc 0.26 needs the attach type at load time for sock_addr programs.
                    fn = bpf.load_func(prog.function, getattr(BPF, prog.prog_type), attach_type=attach_type)
                    probes.links.append(link_to_cgroup(fn.fd, cgroup_root, attach_type))
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception
            probes.close()
            raise ProbeError(f"attaching cgroup programs to {cgroup_root} failed: {exc}") from None

        def deliver(_ctx, data, size):
            probes.delivered += 1
            on_record(ctypes.string_at(data, size))

        bpf["events"].open_ring_buffer(deliver)
        probes._deliver = deliver  # bcc keeps only a weak hold on the callback
        return probes

    def drain(self, wait_ms: int) -> int:
        """Wait up to `wait_ms`, then hand every record in the ring buffer to the consumer;
        returns how many there were."""
        before = self.delivered
        self.bpf.ring_buffer_poll(wait_ms)
        self.bpf.ring_buffer_consume()
        return self.delivered - before

    def lost(self) -> dict[str, int]:
        """Records the kernel could not deliver, per family, since load."""
        table = self.bpf["lost"]
        return {
            family: int(table.sum(table.Key(C[f"PROBE_{family.upper()}"])).value)
            for family in self.families
        }

    def close(self) -> None:
        """Detach every probe: close the cgroup links, and let bcc detach the tracepoints."""
        for link in self.links:
            link.close()
        self.bpf.cleanup()
