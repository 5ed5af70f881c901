"""What a process costs: CPU seconds and memory, read from /proc (passed in, for tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass

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
