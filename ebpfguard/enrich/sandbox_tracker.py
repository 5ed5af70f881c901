"""Which sandboxes have a live process, and the bounded set of `sandbox` label values.

Liveness comes from the events themselves, so it costs one dict update per event: a pid seen
in any event of a sandbox is live there until its `exit` event (or until it is seen in another
cgroup). Processes that started before the agent count once they do something we see.

A host that churns through thousands of sandboxes must not make thousands of series
(Tetragon's pod label once made 300k). The first `max_labels` sandboxes present get their own
label value and the rest share `other`; a sandbox that has had no live process for
`retention_s` gives its value back, so the cap is not spent once and for all.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from typing import Callable

HOST = "host"
OTHER = "other"


class SandboxTracker:
    """Live pids per sandbox, and label values for the metrics (written by the main loop only)."""

    def __init__(self, max_labels: int, retention_s: float, max_pids: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_labels = max_labels
        self.retention_s = retention_s
        self.max_pids = max_pids
        self.clock = clock
        self._pid_sandbox: OrderedDict[int, str] = OrderedDict()
        self._live: Counter = Counter()            # sandbox -> live pids (never zero)
        self._labels: set[str] = set()             # sandboxes that have their own label value
        self._idle_since: dict[str, float] = {}    # labelled sandboxes without a live pid

    def observe(self, kind: str, sandbox: str, pid: int) -> str:
        """Account one event; returns the sandbox's label value."""
        if kind == "exit" or sandbox == HOST:
            self._forget_pid(pid)
        else:
            self._place_pid(pid, sandbox)
        return self.label(sandbox)

    def label(self, sandbox: str) -> str:
        """The label value for a sandbox: its name, or `other` once the cap is reached."""
        if sandbox == HOST or sandbox in self._labels:
            return sandbox
        if len(self._labels) >= self.max_labels:
            return OTHER
        self._labels.add(sandbox)
        if sandbox not in self._live:
            self._idle_since[sandbox] = self.clock()
        return sandbox

    def live_sandboxes(self) -> int:
        """Sandboxes with at least one live process (a single len(): safe from any thread)."""
        return len(self._live)

    def expire(self) -> list[str]:
        """Give back the label values of sandboxes idle for `retention_s`; returns them."""
        cutoff = self.clock() - self.retention_s
        gone = [name for name, since in self._idle_since.items() if since <= cutoff]
        for name in gone:
            del self._idle_since[name]
            self._labels.discard(name)
        return gone

    def _place_pid(self, pid: int, sandbox: str) -> None:
        old = self._pid_sandbox.get(pid)
        if old == sandbox:
            self._pid_sandbox.move_to_end(pid)
            return
        if old is not None:
            self._release(old)
        self._pid_sandbox[pid] = sandbox
        self._live[sandbox] += 1
        self._idle_since.pop(sandbox, None)
        if len(self._pid_sandbox) > self.max_pids:
            # An exit we never saw (lost, or before we started): the oldest pid goes first.
            _, evicted = self._pid_sandbox.popitem(last=False)
            self._release(evicted)

    def _forget_pid(self, pid: int) -> None:
        sandbox = self._pid_sandbox.pop(pid, None)
        if sandbox is not None:
            self._release(sandbox)

    def _release(self, sandbox: str) -> None:
        self._live[sandbox] -= 1
        if self._live[sandbox] > 0:
            return
        del self._live[sandbox]
        if sandbox in self._labels:
            self._idle_since[sandbox] = self.clock()
