"""Killing one process without ever hitting a reused pid.

A pidfd names one process for as long as it is held, so the sequence is: open a pidfd for the
pid, then check through /proc that the process it names started no later than the event that
made the alert (a pid reused since then belongs to a younger process), then signal the pidfd.
Between the check and the signal the pid cannot be reused: the pidfd holds it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NS_PER_TICK = 1_000_000_000 // CLOCK_TICKS


class KillRefused(Exception):
    """The process cannot be (or must not be) killed; the message says why."""


def start_boot_ns(pid: int, proc: str = "/proc") -> Optional[int]:
    """When the process started, in boot-clock nanoseconds (stat's starttime, in clock ticks)."""
    try:
        stat = Path(proc, str(pid), "stat").read_text()
    except OSError:
        return None
    # The comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19]) * NS_PER_TICK  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def ancestors(pid: int, proc: str = "/proc", limit: int = 64) -> set[int]:
    """The pids of a process's parents, up to init."""
    found: set[int] = set()
    while pid > 1 and len(found) < limit:
        try:
            stat = Path(proc, str(pid), "stat").read_text()
            pid = int(stat[stat.rfind(")") + 2:].split()[1])
        except (OSError, IndexError, ValueError):
            break
        found.add(pid)
    return found


def kill_process(pid: int, event_boot_ns: int, proc: str = "/proc") -> None:
    """SIGKILL `pid` if it is the process that existed at `event_boot_ns`; raises KillRefused."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise KillRefused("the process has already exited") from None
    try:
        started = start_boot_ns(pid, proc)
        if started is None:
            raise KillRefused("the process has already exited")
        # starttime has a clock tick's resolution: allow one tick of rounding.
        if started > event_boot_ns + NS_PER_TICK:
            raise KillRefused("the pid now names a younger process (the offender exited and its pid was reused)")
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            raise KillRefused("the process has already exited") from None
    finally:
        os.close(pidfd)
