"""What a process costs: CPU seconds and memory, read from /proc (passed in, for tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ebpfguard.kernel.footprint import parse_smaps

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Footprint:
    cpu_s: float      # user + system time so far
    rss_kib: int       # resident now (VmRSS)
    peak_rss_kib: int  # high-water mark (VmHWM)
    anon_rss_kib: int  # the resident part that is the process's own (RssAnon), not mapped files


def footprint(pid: int, proc: str = "/proc") -> Footprint:
    """CPU from /proc/PID/stat (utime, stime: fields 14 and 15), memory from /proc/PID/status."""
    with open(f"{proc}/{pid}/stat") as f:
        # comm (field 2) may hold spaces and parentheses: split after its closing one.
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    memory = {}
    with open(f"{proc}/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon"):
                memory[key] = int(value.split()[0])
    return Footprint(cpu_s, memory.get("VmRSS", 0), memory.get("VmHWM", 0), memory.get("RssAnon", 0))


def thread_sleeps(pid: int, tid: int, proc: str = "/proc") -> int:
    """How many times one thread of a process has slept so far (its voluntary context
    switches, /proc/PID/task/TID/status)."""
    status = Path(f"{proc}/{pid}/task/{tid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("voluntary_ctxt_switches")))


def wakeups(pid: int, proc: str = "/proc") -> int:
    """How many times the process's threads have slept so far (thread_sleeps summed over its
    threads): an idle agent's wakeups."""
    total = 0
    for task in Path(f"{proc}/{pid}/task").glob("*"):
        try:
            total += thread_sleeps(pid, int(task.name), proc)
        except OSError:  # a thread that ended meanwhile
            continue
    return total


@dataclass(frozen=True)
class Memory:
    """A process's memory in kB: resident (VmRSS) and its parts, proportional (PSS: a page
    shared with others, or mapped twice, counted once in all), and the high-water mark."""

    rss_kib: int
    anon_kib: int    # RssAnon: the process's own pages (heaps, stacks, relocated data)
    file_kib: int    # RssFile: mapped files and the BPF ring buffers (kernel pages)
    pss_kib: int
    peak_rss_kib: int  # VmHWM, since the process started
    ring_kib: int    # resident pages of BPF maps: ring buffers, each data page mapped twice

    def as_mib(self) -> dict[str, float]:
        return {k.removesuffix("_kib") + "_mib": round(v / 1024, 1) for k, v in self.__dict__.items()}


def _fields(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0])
    return out


def bpf_map_rss_kib(smaps_text: str) -> int:
    """Resident kB of the mappings of BPF maps (`anon_inode:bpf-map`) in an smaps file."""
    return sum(m.rss_kib for m in parse_smaps(smaps_text) if m.path == "anon_inode:bpf-map")


def memory(pid: int, proc: str = "/proc") -> Memory:
    """VmRSS, RssAnon, RssFile and VmHWM from /proc/PID/status, PSS from smaps_rollup, the
    BPF maps' share from smaps."""
    status = _fields(f"{proc}/{pid}/status", ("VmRSS", "VmHWM", "RssAnon", "RssFile"))
    rollup = _fields(f"{proc}/{pid}/smaps_rollup", ("Pss",))
    with open(f"{proc}/{pid}/smaps") as f:
        rings = bpf_map_rss_kib(f.read())
    return Memory(status.get("VmRSS", 0), status.get("RssAnon", 0), status.get("RssFile", 0),
                  rollup.get("Pss", 0), status.get("VmHWM", 0), rings)


def held_program_ids(pid: int, proc: str = "/proc") -> set[int]:
    """Ids of the BPF programs process `pid` holds open (its bpf-prog fds' fdinfo)."""
    ids: set[int] = set()
    for fd in os.listdir(f"{proc}/{pid}/fd"):
        try:
            if os.readlink(f"{proc}/{pid}/fd/{fd}") == "anon_inode:bpf-prog":
                with open(f"{proc}/{pid}/fdinfo/{fd}") as info:
                    ids.update(int(line.split()[1]) for line in info if line.startswith("prog_id:"))
        except OSError:
            continue
    return ids
