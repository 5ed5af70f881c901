"""Pod name and namespace for a pod UID, from what the kubelet leaves on the node.

The kubelet keeps each pod's container logs in `/var/log/pods/<namespace>_<name>_<uid>/`,
for every container runtime (containerd, CRI-O, cri-dockerd). Neither namespaces nor pod
names may contain `_` (DNS labels and subdomains), so the directory name is unambiguous.
Reading that directory needs no API access, no credentials and no RBAC, and works the same
for the systemd unit and the DaemonSet (a read-only hostPath).

Lookups are best-effort and cheap on the event path: answers are cached (LRU, bounded), and
the directory is listed again only for a UID not yet known, at most once per
`retry_interval_s` for the same UID, so a pod without a log directory cannot make every one
of its events list the directory.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

_POD_LOG_DIR = re.compile(
    r"^(?P<namespace>[a-z0-9]([-a-z0-9]*[a-z0-9])?)_(?P<name>[a-z0-9]([-.a-z0-9]*[a-z0-9])?)"
    r"_(?P<uid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


@dataclass(frozen=True)
class PodName:
    namespace: str
    name: str


def parse_pod_log_dirs(names: Iterable[str]) -> dict[str, PodName]:
    """UID -> pod, from the entry names of the kubelet's pod log directory."""
    pods = {}
    for entry in names:
        m = _POD_LOG_DIR.match(entry)
        if m:
            pods[m.group("uid")] = PodName(m.group("namespace"), m.group("name"))
    return pods


def list_dir(path: str) -> list[str]:
    """Entry names of `path`; empty when it is absent (not a Kubernetes node) or unreadable."""
    try:
        return os.listdir(path)
    except OSError:
        return []


class PodDirectory:
    """Cached pod UID -> name and namespace, refreshed from the kubelet's pod log directory."""

    def __init__(self, pod_log_dir: str, max_pods: int = 4096, retry_interval_s: float = 5.0,
                 list_entries: Callable[[str], list[str]] = list_dir,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pod_log_dir = pod_log_dir
        self.max_pods = max_pods
        self.retry_interval_s = retry_interval_s
        self._list = list_entries
        self._clock = clock
        self._known: OrderedDict[str, PodName] = OrderedDict()
        self._tried: OrderedDict[str, float] = OrderedDict()  # unknown UID -> when last looked for

    def lookup(self, uid: str) -> Optional[PodName]:
        """The pod with this UID, or None when the kubelet has not told (yet)."""
        pod = self._known.get(uid)
        if pod is not None:
            self._known.move_to_end(uid)
            return pod
        now = self._clock()
        last = self._tried.get(uid)
        if last is not None and now - last < self.retry_interval_s:
            return None
        self._remember_try(uid, now)
        self._refresh()
        return self._known.get(uid)

    def _refresh(self) -> None:
        for uid, pod in parse_pod_log_dirs(self._list(self.pod_log_dir)).items():
            self._known[uid] = pod
            self._tried.pop(uid, None)
        while len(self._known) > self.max_pods:
            self._known.popitem(last=False)

    def _remember_try(self, uid: str, now: float) -> None:
        self._tried[uid] = now
        self._tried.move_to_end(uid)
        while len(self._tried) > self.max_pods:
            self._tried.popitem(last=False)
