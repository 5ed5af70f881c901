"""What miner.binary's executable scan costs: `python -m bench.exescan` (no root needed).

Prints, for this machine and this run:
* the main loop's cost per exec (the detector's `on_event`: one queue put);
* the worker's cost per exec of an executable already seen (open /proc/<pid>/exe, fstat,
  cache hit), against a baseline of a bare open + fstat + close of the same link;
* the first-seen scan of a 10 MiB binary (read, SHA-256, yara-x with the shipped rules),
  against a baseline of reading and hashing the same file alone.
Medians of repeated runs; the ratios are what carries across machines.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

from ebpfguard.detect.exescan import ExecutableScanner, compile_rules, open_process_executable
from ebpfguard.detect.miner_binary import rules_path

WARM_EXECS = 20000
COLD_SCANS = 7
SIZE = 10 << 20


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def timed(function, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    rules = compile_rules([rules_path("miner.yar")])
    event = {"kind": "exec", "process": {"pid": os.getpid()}}
    scanner = ExecutableScanner(rules, (), max_bytes=32 << 20, timeout_s=2, cache_entries=4096, queue_size=1 << 16)
    scanner.verdict_for(event)  # warm: this interpreter's executable is now cached

    def bare_open_stat() -> None:
        descriptor = open_process_executable(event)
        os.fstat(descriptor)
        os.close(descriptor)

    baseline = timed(bare_open_stat, WARM_EXECS)
    warm = timed(lambda: scanner.verdict_for(event), WARM_EXECS)
    submit = timed(lambda: scanner.submit(event), 5000)
    scanner.wait_idle(timeout=60)
    scanner.results()

    with tempfile.TemporaryDirectory() as directory:
        binary = Path(directory) / "miner-like"
        # 10 MiB of incompressible bytes with the miner strings near the end, so every byte is read.
        binary.write_bytes(os.urandom(SIZE - 64) + b"mining.subscribe\0mining.submit\0stratum+tcp://")
        cold, hashing, verdicts = [], [], []
        for _ in range(COLD_SCANS):
            fresh = ExecutableScanner(rules, (), max_bytes=32 << 20, timeout_s=10, cache_entries=4096, queue_size=16,
                                      open_executable=lambda e: os.open(e["filename"], os.O_RDONLY))
            cold += timed(lambda: verdicts.append(fresh.verdict_for({"filename": str(binary)})), 1)
            hashing += timed(lambda: hashlib.sha256(binary.read_bytes()).hexdigest(), 1)
        assert all(verdict.is_miner for verdict in verdicts)

    print(f"main loop per exec (queue put):        {median_us(submit):8.2f} us")
    print(f"worker per exec, warm cache:           {median_us(warm):8.2f} us "
          f"(bare open+fstat of /proc/self/exe: {median_us(baseline):.2f} us, ratio {statistics.median(warm) / statistics.median(baseline):.2f})")
    print(f"first-seen scan of a 10 MiB binary:    {median_us(cold) / 1000:8.2f} ms "
          f"(read+SHA-256 alone: {median_us(hashing) / 1000:.2f} ms, ratio {statistics.median(cold) / statistics.median(hashing):.2f})")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
