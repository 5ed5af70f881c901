"""Giving back the compilers' memory once the probes and rules are built.

bcc compiles the probes with clang and LLVM inside the agent: the pages of libLLVM and
libclang-cpp it touched stay mapped (about 80 MiB of RSS) and the heap keeps the compiler's
freed arenas, though neither is used again until the next start. yara-x compiles the YARA
rules to native code with its own code generator in the same library as its scanner: about
13 of the 17 MiB it touches are the compiler's, and a scan reads back only the rest. Read-only mappings of those
libraries that were never written (no anonymous pages: nothing relocated or copied on write)
are clean file pages: MADV_DONTNEED drops them from the agent, and should the code run again
the kernel reads them back from the page cache. malloc_trim returns the freed heap.
"""

from __future__ import annotations

import ctypes
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

COMPILER_LIBRARIES = re.compile(r"/(?:lib(?:LLVM|clang)|yara_x)[^/]*\.so")
MADV_DONTNEED = 4
M_ARENA_MAX = -8  # mallopt(3)
_MAPPING = re.compile(r"([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)")


@dataclass(frozen=True)
class Mapping:
    """One mapping of /proc/PID/smaps: address range, permissions, path and its counters (kB)."""

    start: int
    end: int
    perms: str
    path: str
    rss_kib: int = 0
    anonymous_kib: int = 0


def parse_smaps(text: str) -> list[Mapping]:
    """The mappings of an smaps file, with their Rss and Anonymous sizes."""
    mappings: list[Mapping] = []
    fields: dict[str, int] = {}
    head = None
    for line in text.splitlines():
        match = _MAPPING.fullmatch(line)
        if match:
            if head is not None:
                mappings.append(Mapping(*head, fields.get("Rss", 0), fields.get("Anonymous", 0)))
            head, fields = (int(match[1], 16), int(match[2], 16), match[3], match[4]), {}
            continue
        key, _, value = line.partition(":")
        if key in ("Rss", "Anonymous"):
            fields[key] = int(value.split()[0])
    if head is not None:
        mappings.append(Mapping(*head, fields.get("Rss", 0), fields.get("Anonymous", 0)))
    return mappings


def releasable(mappings: list[Mapping], libraries: re.Pattern = COMPILER_LIBRARIES) -> list[Mapping]:
    """Mappings of the given libraries that can be dropped without losing a byte: not
    writable, no anonymous (written) page, some pages resident."""
    return [m for m in mappings if libraries.search(m.path) and "w" not in m.perms
            and m.anonymous_kib == 0 and m.rss_kib > 0]


def release_compiler_pages(smaps_path: str = "/proc/self/smaps",
                           libraries: re.Pattern = COMPILER_LIBRARIES) -> int:
    """Drop this process's clean pages of the compiler libraries and trim the heap; returns
    the kB of library pages dropped (0 where madvise or the file is unavailable)."""
    libc = ctypes.CDLL(None, use_errno=True)
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        with open(smaps_path) as smaps:
            mappings = parse_smaps(smaps.read())
    except OSError:
        mappings = []
    dropped = 0
    for mapping in releasable(mappings, libraries):
        if madvise(mapping.start, mapping.end - mapping.start, MADV_DONTNEED) == 0:
            dropped += mapping.rss_kib
    trim = getattr(libc, "malloc_trim", None)  # glibc only
    if trim is not None:
        _trim_heap(trim)
    return dropped


def one_malloc_arena() -> bool:
    """Make every thread allocate from glibc's main arena (before any thread is started);
    False where that is not glibc. Python runs one thread at a time (its interpreter lock),
    so per-thread arenas buy no concurrency here; each holds its own freed memory, which
    only malloc_trim gives back (the detection thread's grew to 14 MiB, 1% in use, under
    a storm)."""
    libc = ctypes.CDLL(None, use_errno=True)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt(M_ARENA_MAX, 1) == 1


# CPU the agent must have used since the last trim before the next one: memory to give back
# was freed by work, and a trim walks every free chunk (several ms on an idle agent, for nothing).
TRIM_AFTER_CPU_S = 0.5


# The process's CPU time at its last malloc_trim: the compiler's release and the trimming
# thread both trim, and each trim counts for the other.
_last_trim_cpu_s = -TRIM_AFTER_CPU_S


def _trim_heap(trim: Callable[[int], int]) -> None:
    global _last_trim_cpu_s
    trim(0)
    _last_trim_cpu_s = time.process_time()


def trim_due(cpu_since_last_trim_s: float) -> bool:
    """Whether the agent worked enough since the last trim for one to give memory back."""
    return cpu_since_last_trim_s >= TRIM_AFTER_CPU_S


def keep_heap_trimmed(interval_s: float) -> Optional[threading.Thread]:
    """A daemon thread that hands the heap's free pages back to the kernel (malloc_trim)
    every `interval_s` in which the agent used TRIM_AFTER_CPU_S of CPU since the last trim;
    None where that is not glibc. A storm that the detection thread falls behind on leaves
    its backlog's memory free but resident: 13 MiB came back in one 0.6 ms call after one.
    The call holds the arena's lock, not the interpreter's."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]

    def run() -> None:
        while True:
            time.sleep(interval_s)
            if trim_due(time.process_time() - _last_trim_cpu_s):
                _trim_heap(trim)

    thread = threading.Thread(target=run, name="ebpfguard-trim", daemon=True)
    thread.start()
    return thread
