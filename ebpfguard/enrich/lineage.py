"""Sandbox identity follows lineage (docs/lineage.md).

The kernel remembers, per process, the cgroup its lineage was in when it entered a sandbox
(bpf/common.h, the `lineage` map) and every record carries it beside the cgroup the process
is in now. This module holds the rule that picks the event's `sandbox` from the two, and the
start-up scan that tells the kernel which cgroups and processes are sandboxed already.
"""

from __future__ import annotations

import os
from typing import Iterator, Mapping, Optional

from ebpfguard.enrich.sandbox import classify


def lineage_sandbox(current: dict, lineage: Optional[dict]) -> dict:
    """The event's `sandbox`: the lineage sandbox when the process has one, with the cgroup
    it is in now as `current_cgroup` (and `current_cgroup_id`) when that is elsewhere.

    A process with no lineage, or whose lineage cgroup names no sandbox (the kernel's name
    test is wider than the matchers), is where it is now. The same sandbox on both sides
    keeps the current object: it is the more precise (the sub-cgroup the process is in)."""
    if lineage is None or lineage.get("name") in (None, "host"):
        return current
    if lineage["name"] == current.get("name"):
        return current
    moved = dict(lineage)
    moved["current_cgroup"] = current.get("cgroup")
    moved["current_cgroup_id"] = current.get("cgroup_id")
    return moved


def sandboxed_cgroups(root: str, settings: Mapping) -> Iterator[tuple[int, str, list[int]]]:
    """(cgroup id, path, pids in it) of every cgroup under `root` that the matchers place in
    a sandbox, read now: what the kernel needs to know of sandboxes older than the agent."""
    root = root.rstrip("/") or "/"
    for dirpath, _dirnames, _files in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root) if dirpath != root else "/"
        if rel == "/" or classify(rel, settings).runtime == "host":
            continue
        try:
            cgroup_id = os.stat(dirpath).st_ino
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                pids = [int(line) for line in f if line.strip()]
        except (OSError, ValueError):
            continue  # removed while we walked
        yield cgroup_id, rel, pids
