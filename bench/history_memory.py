"""What the per-sandbox history holds at its default bounds: `python -m bench.history_memory`
(no root needed).

Feeds the history 10,000 short-lived sandboxes (each a shell, a child with a long command
line, a connect, a DNS answer, an alert and the exits), then a worst case: sandboxes that
each fill every per-sandbox bound with maximal command lines. Prints the Python heap the
history holds (tracemalloc), the sandboxes kept and what the bounds pushed out.
"""

from __future__ import annotations

import time
import tracemalloc

from ebpfguard.config import load_config
from ebpfguard.outputs.history import HistoryBounds, SandboxHistory

SHORT_LIVED = 10_000


def event(kind: str, sandbox: str, pid: int, ppid: int, argv: list[str], **extra) -> dict:
    return {"kind": kind, "time": "2026-11-30T00:00:00.000000000Z", "sandbox": {"name": sandbox},
            "process": {"pid": pid, "ppid": ppid, "comm": argv[0][:15], "exe": f"/usr/bin/{argv[0]}",
                        "argv": argv, "ancestry": [{"pid": ppid, "comm": "runner"}]}, **extra}


def short_lived(history: SandboxHistory, n: int) -> None:
    name, pid = f"sandbox-episode-{n}", 100_000 + 2 * n
    history.write(event("exec", name, pid, 1, ["sh", "-c", "python train.py --epochs 3"], retval=0))
    history.write(event("exec", name, pid + 1, pid, ["python", "train.py", "--epochs", "3", "--data", "/d" * 100], retval=0))
    history.write(event("dns", name, pid + 1, pid, ["python"], query="pypi.org", response=True,
                        answers=[{"name": "pypi.org", "type": "A", "ttl": 60, "value": "10.1.2.3"}]))
    history.write(event("connect", name, pid + 1, pid, ["python"], daddr="10.1.2.3", dport=443, retval=-115))
    history.write({"kind": "alert", "time": "2026-11-30T00:00:01Z", "rule": "egress.internal", "severity": "high",
                   "summary": "connects to 10.1.2.3", "sandbox": {"name": name},
                   "process": {"pid": pid + 1, "comm": "python", "argv": ["python", "train.py"]},
                   "evidence": {"daddr": "10.1.2.3"}, "event": {"kind": "connect", "daddr": "10.1.2.3", "dport": 443}})
    history.write(event("exit", name, pid + 1, pid, ["python"], exit_code=0))
    history.write(event("exit", name, pid, 1, ["sh"], exit_code=0))


def worst_case(history: SandboxHistory, n: int) -> None:
    bounds, name = history.bounds, f"sandbox-busy-{n}"
    for i in range(bounds.max_processes):
        history.write(event("exec", name, i + 2, 1, ["x" * 64] * 64, retval=0))
    for i in range(bounds.max_connections):
        history.write(event("connect", name, 2, 1, ["x"], daddr=f"10.{n % 250}.{i // 250}.{i % 250}", dport=443, retval=0))
    for i in range(bounds.max_alerts):
        history.write({"kind": "alert", "rule": "miner.exec", "severity": "high", "summary": "s" * 200,
                       "sandbox": {"name": name}, "process": {"pid": 2, "argv": ["x" * 64] * 64},
                       "evidence": {"hints": ["h" * 100] * 5}, "event": {"kind": "exec"}})


def measured(fill, count: int, bounds: HistoryBounds) -> tuple[SandboxHistory, float, float]:
    tracemalloc.start()
    started = time.process_time()
    history = SandboxHistory(bounds)
    for n in range(count):
        fill(history, n)
    cpu = time.process_time() - started
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return history, size / 2**20, cpu


def main() -> None:
    bounds = HistoryBounds.from_config(load_config()["history"])
    history, mib, cpu = measured(short_lived, SHORT_LIVED, bounds)
    print(f"{SHORT_LIVED} short-lived sandboxes at the default bounds: {len(history)} kept, "
          f"{mib:.1f} MiB held, {history.evicted['sandboxes']} pushed out, {cpu / (SHORT_LIVED * 7) * 1e6:.1f} us CPU per line")
    busy = 20
    history, mib, _ = measured(worst_case, busy, bounds)
    print(f"{busy} sandboxes each filling every per-sandbox bound with 4 KiB command lines: "
          f"{mib:.1f} MiB held, {mib / busy:.2f} MiB per sandbox "
          f"(x max_sandboxes={bounds.max_sandboxes}: {mib / busy * bounds.max_sandboxes:.0f} MiB worst case)")


if __name__ == "__main__":
    main()
