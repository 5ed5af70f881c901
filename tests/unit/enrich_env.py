"""A host made of temporary directories for the enricher: a cgroup tree with one sandbox, a
/proc tree with init and a shell, and a clock whose boot time is the epoch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ebpfguard.config import load_config
from ebpfguard.enrich.enricher import Enricher
from ebpfguard.enrich.proctable import ProcessTable
from ebpfguard.enrich.sandbox import CgroupIndex

HOST_NETNS = 4026531840
KTIME = 1_000_000_000


class FixedClock:
    """Boot time 0 is the epoch: an event's time is its kernel timestamp."""

    def wall_ns(self, ktime_ns: int) -> int:
        return ktime_ns

    def now_ktime_ns(self) -> int:
        return KTIME


def make_proc(root: Path, pid: int, ppid: int, comm: str, exe: str, argv: list[bytes]) -> None:
    """One /proc/<pid> as the process table reads it: stat, cmdline and the exe link."""
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} 0 0\n")
    (d / "cmdline").write_bytes(b"".join(a + b"\0" for a in argv))
    os.symlink(exe, d / "exe")


@dataclass
class FakeHost:
    cgroups: Path
    proc: Path
    procs: ProcessTable
    index: CgroupIndex
    sandbox_id: int  # the cgroup id of /sandbox-a/inner

    def enricher(self) -> Enricher:
        return Enricher("node-1", self.procs, self.index, load_config()["sandbox"], FixedClock(),
                        host_netns_cookie=HOST_NETNS)


def fake_host(root: Path) -> FakeHost:
    """init (pid 1) and sh (pid 100, its child), and the cgroup /sandbox-a/inner."""
    cgroups = root / "cgroup"
    (cgroups / "sandbox-a" / "inner").mkdir(parents=True)
    proc = root / "proc"
    make_proc(proc, 1, 0, "init", "/sbin/init", [b"init"])
    make_proc(proc, 100, 1, "sh", "/bin/sh", [b"sh"])
    index = CgroupIndex(str(cgroups))
    index._by_handle.works = False  # a plain directory tree has no kernfs file handles
    return FakeHost(cgroups, proc, ProcessTable(proc_root=str(proc)), index,
                    (cgroups / "sandbox-a" / "inner").stat().st_ino)
