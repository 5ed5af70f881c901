"""The alert outputs in a process of their own, fed by the agent through a pipe.

Formatting, spooling and sending cost CPU, and in the agent's process every bit of it would
hold the interpreter lock the main loop needs to drain the ring buffer: under an alert flood
with every receiver down, output threads made the event latency grow several times
(bench/outputs_down.py). In a child process they share only the CPUs. The agent writes each
alert (and the exit of each process it alerted on, which ends an Alertmanager alert) as one
JSON line into a pipe that never blocks it: what the pipe cannot take waits in a bounded
buffer, and what the buffer cannot take is dropped and counted. The child reports its outputs'
counters on its stdout, for the agent's metrics; it runs at nice 10, so that when CPUs are
scarce the agent goes first; it ignores SIGINT and SIGTERM (a terminal's ^C or systemd's stop
reach the whole group) and finishes when the agent closes the pipe.

    agent ──JSON lines──> python -m ebpfguard.outputs.process ──> Alertmanager, Falco, syslog, webhook
          <──counters────
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable, Mapping, Optional

from ebpfguard.outputs.delivery import DROP_REASONS, OutputSnapshot
from ebpfguard.outputs.forward import CLOSE_TIMEOUT_S, Forwarders
from ebpfguard.outputs.settings import plan_outputs
from ebpfguard.outputs.sinks import to_json_bytes

START_TIMEOUT_S = 30.0
REPORT_INTERVAL_S = 0.5
MAX_PENDING_BYTES = 8 << 20
MAX_WATCHED_PIDS = 65536
NICENESS = 10


class OutputsFailed(ValueError):
    """The outputs process could not start (a spool directory it cannot make, say)."""


class OutputProcess:
    """The agent's side: a sink that hands alerts to the outputs process without blocking."""

    def __init__(self, section: Optional[Mapping], warn_interval_s: float,
                 encoded: Callable[[dict], Optional[bytes]] = lambda event: None) -> None:
        """`encoded(event)` may return the event's JSON line already made by an earlier sink."""
        self.names = [plan.name for plan in plan_outputs(section)]
        self.encoded = encoded
        self.proc: Optional[subprocess.Popen] = None
        self._pending = bytearray()
        self._incoming = bytearray()
        self._watched: OrderedDict[int, None] = OrderedDict()
        self._dropped = 0
        self._latest: list[OutputSnapshot] = [OutputSnapshot(n, 0, 0, dict.fromkeys(DROP_REASONS, 0), 0)
                                              for n in self.names]
        self._lock = threading.Lock()  # scrapes read _latest from the metrics threads
        self._warned_dead = False
        if not self.names:
            return
        self.proc = subprocess.Popen([sys.executable, "-m", "ebpfguard.outputs.process"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.proc.stdin.write((json.dumps({"outputs": section, "warn_interval_s": warn_interval_s}) + "\n").encode())
        self.proc.stdin.flush()
        self._wait_ready()
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)

    def _wait_ready(self) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        answer = json.loads(self.proc.stdout.readline() or b"{}") if ready else {}
        if not answer.get("ready"):
            self.proc.kill()
            self.proc.wait()
            raise OutputsFailed(f"outputs could not start: {answer.get('error', 'no answer from the outputs process')}")

    def __bool__(self) -> bool:
        return self.proc is not None

    def write(self, event: dict) -> bool:
        """Hand an alert, or the exit of a process that raised one, to the outputs."""
        kind = event.get("kind")
        if kind == "alert":
            pid = (event.get("process") or {}).get("pid")
            if isinstance(pid, int):
                self._watched[pid] = None
                self._watched.move_to_end(pid)
                if len(self._watched) > MAX_WATCHED_PIDS:
                    self._watched.popitem(last=False)
        elif kind != "exit" or (event.get("process") or {}).get("pid") not in self._watched:
            return True
        else:
            del self._watched[event["process"]["pid"]]
        line = self.encoded(event) or to_json_bytes(event)
        if len(self._pending) + len(line) > MAX_PENDING_BYTES:
            self._dropped += 1
            return True
        self._pending += line
        self._send()
        return True

    def _send(self) -> None:
        while self._pending and self.proc is not None:
            try:
                written = os.write(self.proc.stdin.fileno(), self._pending)
            except BlockingIOError:
                return
            except OSError:  # the outputs process is gone: nothing more can be sent
                self._dropped += self._pending.count(b"\n")
                self._pending.clear()
                self._report_dead()
                return
            del self._pending[:written]

    def _report_dead(self) -> None:
        if not self._warned_dead:
            self._warned_dead = True
            print(f"ebpfguard: warning: the outputs process exited ({self.proc.poll()}): alerts are no longer "
                  "forwarded (counted in ebpfguard_output_dropped_total)", file=sys.stderr, flush=True)

    def flush_if_due(self, now: Optional[float] = None) -> None:
        """Each turn of the main loop: push what waits, read the latest counters."""
        if self.proc is None:
            return
        self._send()
        self._read_counters()

    def _read_counters(self) -> None:
        try:
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        except (BlockingIOError, OSError):
            return
        self._incoming += chunk
        *lines, rest = self._incoming.split(b"\n")
        self._incoming = bytearray(rest)
        for line in lines[-1:]:  # only the latest report matters
            self._store(json.loads(line)["counters"])

    def _store(self, reports: list) -> None:
        snaps = [OutputSnapshot(r["output"], r["sent"], r["failed"], r["dropped"], r["queue_depth"]) for r in reports]
        with self._lock:
            self._latest = snaps

    def counters(self) -> list[OutputSnapshot]:
        """The outputs' latest counters (at most REPORT_INTERVAL_S old), with what the pipe
        could not take counted as `queue_full` of each output."""
        with self._lock:
            latest = list(self._latest)
        out = []
        for snap in latest:
            dropped = dict(snap.dropped)
            dropped["queue_full"] = dropped.get("queue_full", 0) + self._dropped
            out.append(OutputSnapshot(snap.output, snap.sent, snap.failed, dropped, snap.queue_depth))
        return out

    def close(self) -> None:
        """Hand over what waits, close the pipe, and give the outputs time to finish."""
        if self.proc is None:
            return
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while self._pending and self.proc.poll() is None and time.monotonic() < deadline:
            select.select([], [self.proc.stdin], [], 0.1)
            self._send()
        self._dropped += self._pending.count(b"\n")
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=CLOSE_TIMEOUT_S + 2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.set_blocking(self.proc.stdout.fileno(), True)
        tail = bytes(self._incoming) + self.proc.stdout.read()
        reports = [line for line in tail.split(b"\n") if line.strip()]
        if reports:
            self._store(json.loads(reports[-1])["counters"])
        self.proc.stdout.close()


def _report(stream, forwarders: Forwarders, lock: threading.Lock) -> None:
    line = json.dumps({"counters": [
        {"output": s.output, "sent": s.sent, "failed": s.failed, "dropped": s.dropped, "queue_depth": s.queue_depth}
        for s in forwarders.counters()]})
    with lock:
        stream.write(line + "\n")
        stream.flush()


def child_main() -> int:
    """The outputs process: JSON lines in, deliveries out, counters reported."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # When CPUs are scarce, the agent draining the ring buffer goes first; alerts wait a little.
    os.nice(NICENESS)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    setup = json.loads(stdin.readline())
    try:
        forwarders = Forwarders.from_config(setup["outputs"], setup["warn_interval_s"], sys.stderr)
    except (ValueError, OSError) as exc:
        stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        stdout.flush()
        return 2
    stdout.write(json.dumps({"ready": True}) + "\n")
    stdout.flush()
    lock, done = threading.Lock(), threading.Event()

    def report_periodically() -> None:
        while not done.wait(REPORT_INTERVAL_S):
            try:
                _report(stdout, forwarders, lock)
            except (BrokenPipeError, ValueError):
                return

    reporter = threading.Thread(target=report_periodically, daemon=True)
    reporter.start()
    for line in stdin:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        forwarders.write(event)
    forwarders.close()
    done.set()
    reporter.join()
    try:
        _report(stdout, forwarders, lock)
    except (BrokenPipeError, ValueError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
