"""What one detector file read costs, on the detection thread or handed to a reader thread:
`python -m bench.file_reads [READS]` (no root).

Reads a miner config from this process's working directory, as `miner.exec` reads a
`-c config.json`, through `TimedReader(ProcessRootReader())` three ways in one run: handed to
a worker thread (as every read was before: the reader's `read_quick` hidden), answered on the
caller's thread (`read_quick`: a cached path to a file on ext2/3/4 or tmpfs), and the bare read
with no TimedReader (the floor). Prints the process's CPU time per read (every thread's: the
worker's share counts) and the ratios. The working directory must be on a local file system
for the second figure to be the quick path; the run says which path it took.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Callable

from ebpfguard.detect.filereader import ProcessRootReader, ReadResult, TimedReader

READS = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
CONFIG = b'{"pools": [{"url": "stratum+tcp://pool.example.org:3333", "user": "x"}]}\n'


class WorkerOnly:
    """The process reader with its quick path hidden: every read goes to a worker thread."""

    def __init__(self, reader: ProcessRootReader) -> None:
        self.reader = reader

    def read(self, pid: int, path: str, limit: int) -> ReadResult:
        return self.reader.read(pid, path, limit)


def cpu_per_read(read: Callable[[], ReadResult]) -> float:
    """Process CPU seconds per call (all threads), after a warm-up."""
    for _ in range(200):
        assert read().data == CONFIG
    started = time.process_time()
    for _ in range(READS):
        read()
    return (time.process_time() - started) / READS


def main() -> None:
    pid = os.getpid()
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)
        with open("config.json", "wb") as config:
            config.write(CONFIG)
        reader = ProcessRootReader()
        handed = TimedReader(WorkerOnly(reader), timeout_s=5.0)
        local = TimedReader(reader, timeout_s=5.0)
        reader.read(pid, "config.json")
        quick = reader.read_quick(pid, "config.json") is not None
        figures = {
            "handed to a reader thread": cpu_per_read(lambda: handed.read(pid, "config.json")),
            "on the caller's thread" + ("" if quick else " (NOT quick here: worker)"):
                cpu_per_read(lambda: local.read(pid, "config.json")),
            "bare read, no TimedReader": cpu_per_read(lambda: reader.read(pid, "config.json")),
        }
        os.chdir("/")
    floor = figures["bare read, no TimedReader"]
    print(f"{READS} reads; load average {os.getloadavg()[0]:.1f}")
    for name, seconds in figures.items():
        print(f"{name}: {seconds * 1e6:.1f} us CPU per read ({seconds / floor:.2f} x the bare read)")


if __name__ == "__main__":
    main()
