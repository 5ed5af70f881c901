"""When each line of a file was written, seen from outside the writer.

An inotify watch (IN_MODIFY) wakes a thread on every write; it notes the file's size and the
wall-clock time. A line's write time is then the first note whose size covers its end. The
watcher costs a wakeup per write (the agent writes in 64 KiB or 50 ms batches).
"""

from __future__ import annotations

import bisect
import ctypes
import os
import select
import threading
import time
from typing import Iterator

IN_MODIFY = 0x2
_libc = ctypes.CDLL(None, use_errno=True)


class WriteTimes:
    """Watches `path` (which must exist) from construction until stop()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sizes: list[int] = []
        self.stamps: list[int] = []
        self._fd = _libc.inotify_init1(os.O_CLOEXEC)
        if self._fd < 0 or _libc.inotify_add_watch(self._fd, path.encode(), IN_MODIFY) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {path}")
        self._stopping = False
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        # The timeout only lets stop() end the thread; writes wake it at once.
        while not self._stopping:
            if select.select([self._fd], [], [], 0.1)[0]:
                os.read(self._fd, 4096)  # one or more events; only their arrival matters
                self._note()
        self._note()

    def _note(self) -> None:
        now = time.time_ns()
        size = os.stat(self.path).st_size
        if not self.sizes or size > self.sizes[-1]:
            self.sizes.append(size)
            self.stamps.append(now)

    def stop(self) -> None:
        """Stop watching (after the writer closed the file)."""
        self._stopping = True
        self._thread.join(timeout=5)
        os.close(self._fd)

    def lines(self) -> Iterator[tuple[bytes, int]]:
        """Each complete line of the file with the wall-clock ns at which it was seen written."""
        offset = 0
        with open(self.path, "rb") as f:
            for line in f:
                offset += len(line)
                i = bisect.bisect_left(self.sizes, offset)
                if i < len(self.stamps) and line.endswith(b"\n"):
                    yield line, self.stamps[i]
