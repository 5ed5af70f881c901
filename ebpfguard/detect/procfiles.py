"""Reading a file the way a watched process named it (its `-c config.json`), safely.

A relative path is resolved from `/proc/<pid>/cwd`, an absolute one under `/proc/<pid>/root`,
so a containerised process's files are found in its own mount namespace. The agent runs as
root and the sandbox controls the file system it reads, so the walk is done one component at
a time with O_NOFOLLOW and without `..`: a symlink planted in the sandbox cannot point the
agent at the host's files (a symlink, `..` or a non-regular file simply yields None). Reads are
bounded and O_NONBLOCK, so a FIFO or a huge file cannot stall the agent's hot path.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from ebpfguard.detect.registry import Event

DEFAULT_MAX_BYTES = 256 * 1024
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


def read_process_file(event: Event, path: str, *, proc_root: str = "/proc", max_bytes: int = DEFAULT_MAX_BYTES) -> Optional[bytes]:
    """The first `max_bytes` of `path` as the event's process sees it; None if not readable."""
    pid = (event.get("process") or {}).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(path, str):
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts or "\0" in path:
        return None
    base = os.path.join(proc_root, str(pid), "root" if path.startswith("/") else "cwd")
    descriptors = []
    try:
        # The magic link itself must be followed: it is the process's root or cwd.
        descriptors.append(os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        for part in parts[:-1]:
            descriptors.append(os.open(part, _DIRECTORY_FLAGS, dir_fd=descriptors[-1]))
        descriptors.append(os.open(parts[-1], _FILE_FLAGS, dir_fd=descriptors[-1]))
        if not stat.S_ISREG(os.fstat(descriptors[-1]).st_mode):
            return None
        return _read_up_to(descriptors[-1], max_bytes)
    except (OSError, ValueError):
        return None
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _read_up_to(descriptor: int, max_bytes: int) -> bytes:
    chunks, remaining = [], max_bytes
    while remaining > 0:
        chunk = os.read(descriptor, min(remaining, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
