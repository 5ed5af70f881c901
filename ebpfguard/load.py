"""Loading: compile the probes in bpf/ with bcc, attach them, and drain their ring buffer.

The only module that talks to bcc. Probes submit records without waking us; `drain()` is
called on a short timer and hands each record's bytes to the consumer in one batch.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from ebpfguard.events import BPF_DIR, C

# Probe families: their source file and the tracepoints they attach to. The family names
# are the PROBE_* enum of bpf/events.h, lower-cased, and label losses and health.
PROBE_FAMILIES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "exec": ("exec.bpf.c", (
        ("syscalls", "sys_enter_execve"), ("syscalls", "sys_exit_execve"),
        ("syscalls", "sys_enter_execveat"), ("syscalls", "sys_exit_execveat"),
    )),
    "proc": ("proc.bpf.c", (
        ("task", "task_newtask"), ("sched", "sched_process_exit"),
        ("syscalls", "sys_enter_exit_group"),
    )),
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


def program_text(families: tuple[str, ...] = tuple(PROBE_FAMILIES)) -> str:
    """common.h and the families' sources, concatenated: bcc rewrites map calls and makes
    tracepoint argument structs only in its main text, never in included files (common.h's
    include guard then makes each family's `#include "common.h"` a no-op)."""
    sources = ["common.h"] + [PROBE_FAMILIES[f][0] for f in families]
    return "".join((BPF_DIR / name).read_text() for name in sources)


def compile_flags(config: Mapping, tracefs: str) -> list[str]:
    """cflags: include path, ring size, and features found in this kernel's tracepoints."""
    pages = int(config["probes"]["ring_buffer_pages"])
    if pages <= 0 or pages & (pages - 1):
        raise ProbeError(f"probes.ring_buffer_pages must be a power of two, not {pages}")
    flags = [f"-I{BPF_DIR}", f"-DRINGBUF_PAGES={pages}"]
    if tracepoint_has_field(tracefs, "sched", "sched_process_exit", "group_dead"):
        flags.append("-DHAVE_GROUP_DEAD")
    return flags


@dataclass
class ProbeSet:
    """The loaded, attached probes of every family."""

    bpf: object
    families: tuple[str, ...]

    @classmethod
    def load(cls, config: Mapping, on_record: Callable[[bytes], None]) -> "ProbeSet":
        """Compile and attach every probe family; records go to `on_record` on drain()."""
        from bcc import BPF  # the distro's python3-bpfcc; imported here so unit tests need no bcc

        tracefs = ensure_tracefs()
        families = tuple(PROBE_FAMILIES)
        try:
            bpf = BPF(text=program_text(families), cflags=compile_flags(config, tracefs))
        except Exception as exc:  # bcc raises bare Exception for compile and load failures
            raise ProbeError(f"loading the probes failed: {exc}") from None

        def deliver(_ctx, data, size):
            on_record(ctypes.string_at(data, size))

        bpf["events"].open_ring_buffer(deliver)
        probes = cls(bpf, families)
        probes._deliver = deliver  # bcc keeps only a weak hold on the callback
        return probes

    def drain(self, wait_ms: int) -> None:
        """Wait up to `wait_ms`, then hand every record in the ring buffer to the consumer."""
        self.bpf.ring_buffer_poll(wait_ms)
        self.bpf.ring_buffer_consume()

    def lost(self) -> dict[str, int]:
        """Records the kernel could not deliver, per family, since load."""
        table = self.bpf["lost"]
        return {
            family: int(table.sum(table.Key(C[f"PROBE_{family.upper()}"])).value)
            for family in self.families
        }

    def close(self) -> None:
        """Detach every probe (bcc closes the tracepoint links)."""
        self.bpf.cleanup()
