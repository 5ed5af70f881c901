"""Sandbox cgroups as things to act on: where a sandbox's subtree starts, and freeze, thaw
and kill through the cgroup v2 interface files (cgroup.freeze, cgroup.events, cgroup.kill).

A frozen cgroup stays frozen when the agent stops: the freeze is the kernel's state, not
ours, which is the point (the processes and their memory wait for someone to look). The
agent finds frozen sandboxes again by reading their cgroup.freeze.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional

from ebpfguard.enrich.sandbox import HOST, classify


@dataclass(frozen=True)
class SandboxCgroup:
    """The cgroup at the top of a sandbox's subtree."""

    name: str
    path: str      # relative to the cgroup2 mount, e.g. /sandbox-a
    cgroup_id: int
    level: int     # its depth below the root cgroup (the kernel's cgroup level)


def sandbox_root_path(cgroup_path: str, settings: Mapping) -> str:
    """The outermost cgroup of `cgroup_path`'s ancestry that still names the same sandbox:
    the subtree an action covers. A host cgroup is its own root."""
    whole = classify(cgroup_path, settings)
    if whole == HOST:
        return cgroup_path
    parts = [p for p in cgroup_path.split("/") if p]
    for depth in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:depth])
        if classify(prefix, settings).name == whole.name:
            return prefix
    return cgroup_path


def sandbox_cgroup(mount: str, cgroup_path: str, settings: Mapping, name: str) -> SandboxCgroup:
    """The sandbox subtree holding `cgroup_path`; raises OSError when it is gone."""
    root = sandbox_root_path(cgroup_path, settings)
    ino = os.stat(mount.rstrip("/") + root).st_ino
    return SandboxCgroup(name, root, ino, len([p for p in root.split("/") if p]))


def contains(outer: str, inner: str) -> bool:
    """Whether cgroup path `inner` is `outer` or below it."""
    outer = outer.rstrip("/")
    return inner == outer or inner.startswith(outer + "/") or outer == ""


def own_cgroup_path(proc: str = "/proc", pid: str = "self") -> Optional[str]:
    """A process's cgroup v2 path (the `0::` line of /proc/PID/cgroup)."""
    try:
        for line in Path(proc, pid, "cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        return None
    return None


def _write(directory: Path, name: str, value: str) -> None:
    with open(directory / name, "w") as f:
        f.write(value)


def start_freeze(mount: str, path: str) -> None:
    """Ask the kernel to freeze every process of the subtree (it may take a moment)."""
    _write(Path(mount.rstrip("/") + path), "cgroup.freeze", "1")


def thaw(mount: str, path: str) -> None:
    _write(Path(mount.rstrip("/") + path), "cgroup.freeze", "0")


def kill_all(mount: str, path: str) -> None:
    """SIGKILL every process of the subtree, frozen ones included (cgroup.kill, Linux 5.14+)."""
    _write(Path(mount.rstrip("/") + path), "cgroup.kill", "1")


def is_frozen(mount: str, path: str) -> bool:
    """Whether the kernel reports the whole subtree frozen (`frozen 1` in cgroup.events)."""
    try:
        events = Path(mount.rstrip("/") + path, "cgroup.events").read_text()
    except OSError:
        return False
    return "frozen 1" in events.splitlines()


def freeze_requested(directory: Path) -> bool:
    try:
        return (directory / "cgroup.freeze").read_text().strip() == "1"
    except OSError:
        return False


def sandbox_roots(mount: str, settings: Mapping, max_dirs: int = 20000) -> Iterator[SandboxCgroup]:
    """Every sandbox's top cgroup under the mount (a bounded walk: at most `max_dirs`
    directories, and none below a sandbox's top)."""
    root = mount.rstrip("/")
    seen = 0
    for dirpath, dirnames, _ in os.walk(root):
        seen += 1
        if seen > max_dirs:
            return
        rel = dirpath[len(root):] or "/"
        sandbox = classify(rel, settings) if rel != "/" else HOST
        if sandbox != HOST:
            dirnames[:] = []
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            yield SandboxCgroup(sandbox.name, rel, ino, rel.count("/"))


def frozen_sandboxes(mount: str, settings: Mapping) -> list[SandboxCgroup]:
    """Sandboxes whose top cgroup has a freeze set (by us, now or before a restart, or by anyone)."""
    return [s for s in sandbox_roots(mount, settings) if freeze_requested(Path(mount.rstrip("/") + s.path))]


def find_sandbox(mount: str, settings: Mapping, name: str) -> list[SandboxCgroup]:
    """The top cgroups of the sandbox called `name` (usually one)."""
    return [s for s in sandbox_roots(mount, settings) if s.name == name]
