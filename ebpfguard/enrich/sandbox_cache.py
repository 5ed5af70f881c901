"""The sandbox of a cgroup id, remembered for a few seconds.

Matching a cgroup path costs more than the rest of an event, and a pod's name may show up a
little after its first process: a short time-to-live serves both.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping, Optional

from ebpfguard.enrich.pods import PodDirectory
from ebpfguard.enrich.sandbox import CgroupIndex, resolve_sandbox


class SandboxCache:
    """resolve_sandbox() per cgroup id, each answer kept `ttl_ns`; at most the index's
    cache size of answers (all dropped at once when full: cheaper than an LRU, and rare)."""

    def __init__(self, cgroups: CgroupIndex, settings: Mapping, pods: Optional[PodDirectory] = None,
                 ttl_ns: int = 5_000_000_000, now_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.cgroups = cgroups
        self.settings = settings
        self.pods = pods
        self.ttl_ns = ttl_ns
        self.now_ns = now_ns
        self._answers: dict[int, tuple[int, dict, bool]] = {}
        # Told each cgroup id found in a sandbox (the agent tells the kernel, so that the
        # processes in it get a lineage: docs/lineage.md); called again after each time-to-live.
        self.on_sandbox: Optional[Callable[[int], None]] = None

    def sandbox_of(self, cgroup_id: int) -> tuple[dict, bool]:
        """(the sandbox object, whether the cgroup could be resolved at all)."""
        now = self.now_ns()
        cached = self._answers.get(cgroup_id)
        if cached is not None and now - cached[0] < self.ttl_ns:
            return cached[1], cached[2]
        sandbox, known = resolve_sandbox(self.cgroups, cgroup_id, self.settings, self.pods)
        if len(self._answers) >= self.cgroups.cache_size:
            self._answers.clear()
        self._answers[cgroup_id] = (now, sandbox, known)
        if known and sandbox["runtime"] != "host" and self.on_sandbox is not None:
            self.on_sandbox(cgroup_id)
        return sandbox, known
