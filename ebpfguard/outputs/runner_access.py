"""Who may ask the agent about which sandboxes, over its control socket.

Root may ask about every sandbox; others only as the config's `clients.allow` grants (a uid
or a group, and sandbox name globs). The caller is known by SO_PEERCRED, which the kernel
fills in at connect time, so it cannot be forged. A caller inside a sandbox is refused
whoever it runs as: a sandbox asks about neither itself nor the others.
"""

from __future__ import annotations

import grp
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ebpfguard.enrich.gpu import cgroup_path_of_pid
from ebpfguard.enrich.sandbox import classify
from ebpfguard.globs import glob_match

HOST = "host"


@dataclass(frozen=True)
class Grant:
    """One `clients.allow` entry: a uid or a gid, and the sandbox globs it may ask about."""

    uid: Optional[int]
    gid: Optional[int]
    sandboxes: tuple[str, ...]

    def applies_to(self, peer: "Peer") -> bool:
        return (self.uid is not None and peer.uid == self.uid) or (self.gid is not None and self.gid in peer.groups)


def parse_grants(entries: Sequence, group_id: Callable[[str], int] = lambda name: grp.getgrnam(name).gr_gid) -> list[Grant]:
    """`clients.allow` as grants; ValueError naming the entry and what is wrong with it."""
    grants = []
    for i, entry in enumerate(entries):
        where = f"clients.allow[{i}]"
        if not isinstance(entry, Mapping) or set(entry) - {"uid", "group", "sandboxes"}:
            raise ValueError(f"{where}: an entry is {{uid: N or group: NAME, sandboxes: [GLOB, ...]}}")
        if ("uid" in entry) == ("group" in entry):
            raise ValueError(f"{where}: name exactly one of uid and group")
        globs = entry.get("sandboxes")
        if not isinstance(globs, list) or not globs or not all(isinstance(g, str) and g for g in globs):
            raise ValueError(f"{where}: sandboxes must be a non-empty list of globs")
        uid = gid = None
        if "uid" in entry:
            uid = entry["uid"]
            if isinstance(uid, bool) or not isinstance(uid, int) or uid < 0:
                raise ValueError(f"{where}: uid must be a number >= 0")
        else:
            group = entry["group"]
            try:
                gid = group if isinstance(group, int) and not isinstance(group, bool) else group_id(str(group))
            except KeyError:
                raise ValueError(f"{where}: no group {group!r} on this host") from None
        grants.append(Grant(uid, gid, tuple(globs)))
    return grants


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a connection, as the kernel and /proc describe it."""

    pid: int
    uid: int
    groups: frozenset
    sandbox: str  # the sandbox the caller itself runs in; `host` outside every sandbox


def peer_of(conn: socket.socket, settings: Mapping, proc_root: str = "/proc") -> Peer:
    """Who is connected: SO_PEERCRED's pid, uid and gid, the pid's supplementary groups, and
    the sandbox its cgroup belongs to (unknown cgroup: treated as a sandbox, refused)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    groups = {gid} | _supplementary_groups(proc_root, pid)
    path = cgroup_path_of_pid(pid, proc_root)
    sandbox = classify(path, settings).name if path is not None else "unknown"
    return Peer(pid, uid, frozenset(groups), sandbox)


def _supplementary_groups(proc_root: str, pid: int) -> set[int]:
    try:
        for line in Path(proc_root, str(pid), "status").read_text().splitlines():
            if line.startswith("Groups:"):
                return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        pass
    return set()


class RunnerAccess:
    """The config's grants, asked per connection and per sandbox."""

    def __init__(self, grants: Sequence[Grant]) -> None:
        self.grants = tuple(grants)

    @property
    def open_to_others(self) -> bool:
        """Whether anyone but root is ever allowed (the socket's mode follows)."""
        return bool(self.grants)

    def may_connect(self, peer: Peer) -> bool:
        """Root, or a uid or group some grant names; never a caller inside a sandbox."""
        if peer.sandbox != HOST:
            return False
        return peer.uid == 0 or any(g.applies_to(peer) for g in self.grants)

    def may_ask(self, peer: Peer, sandbox: str) -> bool:
        """Whether `peer` may ask about `sandbox` (root: any; others: their grants' globs)."""
        if not self.may_connect(peer):
            return False
        if peer.uid == 0:
            return True
        return any(g.applies_to(peer) and any(glob_match(p, sandbox) for p in g.sandboxes) for g in self.grants)
