"""Time as events carry it: RFC 3339 UTC with nanoseconds, and the kernel's boot clock."""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime
from typing import Any, Optional

NS_PER_S = 1_000_000_000
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)\Z", re.IGNORECASE)


def rfc3339_ns(epoch_ns: int) -> str:
    """RFC 3339 UTC time with nanoseconds, e.g. 2026-11-27T20:29:38.123456789Z."""
    sec, frac = divmod(epoch_ns, NS_PER_S)
    return f"{_rfc3339_second(sec)}.{frac:09d}Z"


@functools.lru_cache(maxsize=64)  # every event formats its time: they share few seconds
def _rfc3339_second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def event_time_ns(value: Any) -> Optional[int]:
    """Nanoseconds since the epoch of an RFC 3339 time (ns precision kept), None if not one."""
    if isinstance(value, str) and len(value) == 30 and value[19] == "." and value[29] in "Zz":
        # What rfc3339_ns writes (every event's own time): read without the regex.
        whole, fraction = value[:19], value[20:29]
        if (whole[4] == whole[7] == "-" and whole[10] in "Tt" and whole[13] == whole[16] == ":"
                and (whole[:4] + whole[5:7] + whole[8:10] + whole[11:13] + whole[14:16] + whole[17:]).isdecimal()
                and fraction.isdecimal()):
            seconds = _epoch_s(whole, "Z")
            return None if seconds is None else seconds * NS_PER_S + int(fraction)
    match = _RFC3339.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    whole, fraction, zone = match.groups()
    seconds = _epoch_s(whole, zone.upper())
    if seconds is None:
        return None
    return seconds * NS_PER_S + int((fraction or "0").ljust(9, "0"))


@functools.lru_cache(maxsize=1024)  # a stream of events shares few distinct seconds
def _epoch_s(whole: str, zone: str) -> Optional[int]:
    try:
        moment = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return int(moment.timestamp())


class BootClock:
    """Maps the kernel's boot-time nanoseconds (bpf_ktime_get_boot_ns) to wall-clock time."""

    def __init__(self) -> None:
        self.resync()

    def resync(self) -> None:
        self.offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def wall_ns(self, ktime_ns: int) -> int:
        return ktime_ns + self.offset_ns

    @staticmethod
    def now_ktime_ns() -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
