"""Which sandbox an event belongs to: cgroup id -> cgroup path -> sandbox.

A sandbox is a cgroup v2 subtree. The kernel gives us the cgroup id (the inode number of the
cgroup's directory); `CgroupIndex` turns it into a path under the cgroup2 mount, and
`classify` names the sandbox from that path with the configured matchers, in order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ebpfguard.enrich.pods import PodDirectory
from ebpfguard.globs import glob_match

RUNTIMES = ("pattern", "kubernetes", "docker", "containerd", "systemd", "host")


@dataclass(frozen=True)
class Sandbox:
    """A sandbox as events carry it (design.md `sandbox`)."""

    name: str
    runtime: str
    container_id: Optional[str] = None
    pod_uid: Optional[str] = None
    pod: Optional[str] = None
    namespace: Optional[str] = None

    def as_dict(self, cgroup: Optional[str], cgroup_id: int) -> dict:
        out = {"name": self.name, "cgroup": cgroup, "cgroup_id": cgroup_id, "runtime": self.runtime}
        for key in ("pod", "namespace", "pod_uid", "container_id"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out


HOST = Sandbox("host", "host")


def find_cgroup2_mount(mountinfo: str) -> Optional[str]:
    """The cgroup2 mount point named in /proc/self/mountinfo text (shortest path wins)."""
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            mounts.append(_unescape_mountinfo(left.split(" ")[4]))
    return min(mounts, key=len) if mounts else None


def _unescape_mountinfo(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


# --- matchers: pure functions of the path relative to the cgroup2 mount ---------------------

_HEX64 = r"[0-9a-f]{64}"
_DOCKER = re.compile(rf"^(?:docker-({_HEX64})\.scope|({_HEX64}))$")
_CONTAINERD = re.compile(rf"^cri-containerd-({_HEX64})\.scope$")


def _match_pattern(parts: Sequence[str], settings: Mapping) -> Optional[Sandbox]:
    # Outermost match: a sandbox cannot rename itself by creating a child cgroup.
    for part in parts:
        if any(glob_match(pat, part) for pat in settings.get("patterns", ())):
            return Sandbox(part, "pattern")
    return None


# kubelet pod cgroups. systemd driver: kubepods[-<qos>]-pod<uid, '-' written '_'>.slice, with
# an optional prefix (kind and some distros root it at kubelet.slice/kubelet-kubepods.slice);
# cgroupfs driver: kubepods[/<qos>]/pod<uid>. Guaranteed pods have no QoS level.
_UUID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_K8S_POD = re.compile(rf"^(?:[a-z-]*kubepods(?:-besteffort|-burstable)?-pod({_UUID})\.slice|pod({_UUID}))$")
# A container's cgroup inside the pod's: systemd scopes per runtime, or the bare id (cgroupfs).
# CRI-O's conmon (crio-conmon-<id>.scope) is the runtime's monitor, not a container: no id.
_K8S_CONTAINER = re.compile(rf"^(?:(?:cri-containerd|crio|docker|cri-dockerd)-({_HEX64})\.scope|({_HEX64}))$")


def _match_kubernetes(parts: Sequence[str], settings: Mapping) -> Optional[Sandbox]:
    for i, part in enumerate(parts):
        m = _K8S_POD.match(part)
        # A pod<uid> directory counts only inside the kubelet's kubepods tree.
        if not m or not any("kubepods" in p for p in parts[: i + 1]):
            continue
        uid = (m.group(1) or m.group(2)).replace("_", "-")
        container = _K8S_CONTAINER.match(parts[i + 1]) if i + 1 < len(parts) else None
        cid = (container.group(1) or container.group(2)) if container else None
        return Sandbox(f"pod-{uid}", "kubernetes", container_id=cid, pod_uid=uid)
    return None


def _match_docker(parts: Sequence[str], settings: Mapping) -> Optional[Sandbox]:
    for i, part in enumerate(parts):
        m = _DOCKER.match(part)
        # cgroupfs driver: /docker/<id>; systemd driver: /system.slice/docker-<id>.scope
        if m and (m.group(1) or (i > 0 and parts[i - 1] == "docker")):
            cid = m.group(1) or m.group(2)
            return Sandbox(f"docker-{cid[:12]}", "docker", container_id=cid)
    return None


def _match_containerd(parts: Sequence[str], settings: Mapping) -> Optional[Sandbox]:
    for part in parts:
        m = _CONTAINERD.match(part)
        if m:
            cid = m.group(1)
            return Sandbox(f"containerd-{cid[:12]}", "containerd", container_id=cid)
    return None


def _match_systemd(parts: Sequence[str], settings: Mapping) -> Optional[Sandbox]:
    units = set(settings.get("systemd_units", ()))
    for part in parts:
        if part in units:
            return Sandbox(part, "systemd")
    return None


MATCHERS: dict[str, Callable[[Sequence[str], Mapping], Optional[Sandbox]]] = {
    "pattern": _match_pattern,
    "kubernetes": _match_kubernetes,
    "docker": _match_docker,
    "containerd": _match_containerd,
    "systemd": _match_systemd,
}


def classify(cgroup_path: str, settings: Mapping) -> Sandbox:
    """The sandbox a cgroup path (relative to the cgroup2 mount) belongs to."""
    parts = [p for p in cgroup_path.split("/") if p]
    for name in settings.get("matchers", ()):
        found = MATCHERS[name](parts, settings)
        if found:
            return found
    return HOST


def validate_matchers(names: Sequence[str]) -> None:
    """Raise ValueError naming an unknown matcher."""
    for name in names:
        if name not in MATCHERS:
            raise ValueError(f"unknown sandbox matcher {name!r} (known: {', '.join(MATCHERS)})")


# --- cgroup id -> path ---------------------------------------------------------------------

class CgroupIndex:
    """Resolves cgroup ids to paths relative to the cgroup2 mount, with an LRU cache.

    A cgroup made after start-up is found through its file handle (the kernel exports a
    cgroup's id as its handle), else by walking the tree; a removed cgroup keeps resolving
    while it stays cached, so events in flight still get their path.
    """

    def __init__(self, root: str, cache_size: int = 8192) -> None:
        self.root = root.rstrip("/") or "/"
        self.cache_size = cache_size
        self._cache: OrderedDict[int, str] = OrderedDict()
        self._by_handle = _HandleOpener(self.root)

    def path_of(self, cgroup_id: int) -> Optional[str]:
        """The cgroup's path ("/" for the root), or None if it no longer exists."""
        path = self._cache.get(cgroup_id)
        if path is not None:
            self._cache.move_to_end(cgroup_id)
            return path
        path = self._by_handle.path_of(cgroup_id)
        if path is None and not self._by_handle.works:
            path = self._walk_for(cgroup_id)
        if path is not None:
            self._remember(cgroup_id, path)
        return path

    def _remember(self, cgroup_id: int, path: str) -> None:
        self._cache[cgroup_id] = path
        self._cache.move_to_end(cgroup_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _walk_for(self, cgroup_id: int) -> Optional[str]:
        found = None
        for dirpath, dirnames, _ in os.walk(self.root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = "/" + os.path.relpath(dirpath, self.root) if dirpath != self.root else "/"
            if ino == cgroup_id:
                found = rel
            if len(self._cache) < self.cache_size:
                self._cache[ino] = rel
        return found


class _HandleOpener:
    """open_by_handle_at() on the cgroup2 mount: kernfs exports a cgroup id as its handle."""

    FILEID_KERNFS = 0xFE

    def __init__(self, root: str) -> None:
        self.root = root
        self.works = True
        libc_name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
        if self._libc is None or not hasattr(self._libc, "open_by_handle_at"):
            self.works = False

    def path_of(self, cgroup_id: int) -> Optional[str]:
        if not self.works:
            return None
        try:
            mount_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            self.works = False
            return None
        try:
            handle = struct.pack("=Ii", 8, self.FILEID_KERNFS) + struct.pack("=Q", cgroup_id)
            buf = ctypes.create_string_buffer(handle, len(handle))
            fd = self._libc.open_by_handle_at(mount_fd, buf, os.O_RDONLY | os.O_DIRECTORY)
            if fd < 0:
                err = ctypes.get_errno()
                if err in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    self.works = False
                return None
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
        finally:
            os.close(mount_fd)
        if target == self.root:
            return "/"
        if target.startswith(self.root + "/"):
            return target[len(self.root):]
        return None


def resolve_sandbox(index: CgroupIndex, cgroup_id: int, settings: Mapping,
                    pods: Optional[PodDirectory] = None) -> tuple[dict, bool]:
    """The event's `sandbox` object, and whether its path could be known.

    A cgroup gone before we saw it is not guessed to be the host: its name is "unknown"
    (treated as a sandbox, as replay does) and its runtime null. A pod is named
    `<namespace>/<pod>` when `pods` knows its UID, else `pod-<uid>`."""
    path = index.path_of(cgroup_id)
    if path is None:
        return {"name": "unknown", "cgroup": None, "cgroup_id": cgroup_id, "runtime": None}, False
    sandbox = classify(path, settings)
    if sandbox.pod_uid and pods is not None:
        pod = pods.lookup(sandbox.pod_uid)
        if pod is not None:
            sandbox = replace(sandbox, name=f"{pod.namespace}/{pod.name}", pod=pod.name, namespace=pod.namespace)
    return sandbox.as_dict(path, cgroup_id), True


def cgroup_root_from_proc(proc: str = "/proc") -> Optional[str]:
    """The cgroup2 mount point of this host, from /proc/self/mountinfo."""
    try:
        text = Path(proc, "self", "mountinfo").read_text()
    except OSError:
        return None
    return find_cgroup2_mount(text)
