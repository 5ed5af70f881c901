"""Through local relays: an alert on a host process that relays a sandbox's traffic names the
sandbox too.

A sandbox that reaches a pool through a proxy on the host's loopback (an HTTP CONNECT proxy,
a port forwarder) shows the finding on the relay's own flow, so the alert would blame `host`.
The agent saw the sandbox's connect to the relay's port: when a host alert's process (or one
of its ancestors) holds a TCP socket on a loopback port a sandbox connected to, the alert is
the sandbox's, and `evidence.via` names the relay process and the sandbox's connection.

The sockets are read from /proc only for a host alert while some sandbox has connected to a
loopback port (rare), and the ports remembered are bounded (LRU) and expire.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

MAX_FDS_READ = 4096


@dataclass(frozen=True)
class SandboxConnection:
    """A sandbox's connect to a loopback port."""

    sandbox: Mapping
    pid: int
    comm: str
    daddr: str
    dport: int
    seen_s: float


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1",) or address.startswith("::ffff:127.")


def local_ports_by_inode(proc_net_tcp: str) -> dict[int, int]:
    """{socket inode: local port} of every socket in /proc/net/tcp or tcp6 text."""
    ports = {}
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or ":" not in fields[1] or not fields[9].isdigit():
            continue
        ports[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return ports


class RelayIndex:
    """Loopback ports sandboxes connected to, and the attribution of host alerts to them."""

    def __init__(self, proc_root: str = "/proc", max_ports: int = 4096, ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.proc_root = proc_root
        self.max_ports = max_ports
        self.ttl_s = ttl_s
        self.clock = clock
        self._by_port: OrderedDict[int, SandboxConnection] = OrderedDict()

    def observe(self, event: Mapping) -> None:
        """Remember a sandbox's connect to a loopback port."""
        if event.get("kind") != "connect":
            return
        sandbox = event.get("sandbox") or {}
        if sandbox.get("name") in (None, "host") or not is_loopback(str(event.get("daddr", ""))):
            return
        process = event.get("process") or {}
        port = int(event.get("dport") or 0)
        self._by_port[port] = SandboxConnection(sandbox, process.get("pid"), process.get("comm"),
                                                str(event["daddr"]), port, self.clock())
        self._by_port.move_to_end(port)
        while len(self._by_port) > self.max_ports:
            self._by_port.popitem(last=False)

    def attribute(self, alert: dict) -> dict:
        """The alert, or a copy naming the sandbox whose connection its host process relays."""
        if (alert.get("sandbox") or {}).get("name") != "host" or not self._by_port:
            return alert
        process = alert.get("process") or {}
        pids = [process.get("pid")] + [a.get("pid") for a in process.get("ancestry") or ()]
        ports = self._ports_held(p for p in pids if isinstance(p, int) and p > 1)
        now = self.clock()
        for relay_pid, port in ports:
            conn = self._by_port.get(port)
            if conn is None or now - conn.seen_s > self.ttl_s:
                continue
            via = {"relay": {"pid": relay_pid, "comm": process.get("comm") if relay_pid == process.get("pid")
                             else next((a.get("comm") for a in process.get("ancestry") or ()
                                        if a.get("pid") == relay_pid), None)},
                   "connection": {"sandbox": conn.sandbox.get("name"), "pid": conn.pid, "comm": conn.comm,
                                  "daddr": conn.daddr, "dport": conn.dport}}
            return {**alert, "sandbox": dict(conn.sandbox), "evidence": {**alert.get("evidence", {}), "via": via}}
        return alert

    def _ports_held(self, pids: Iterable[int]) -> list[tuple[int, int]]:
        """(pid, local TCP port) of the sockets each process holds, in the pids' order."""
        by_inode: dict[int, int] = {}
        for name in ("tcp", "tcp6"):
            try:
                with open(os.path.join(self.proc_root, "net", name)) as f:
                    by_inode.update(local_ports_by_inode(f.read()))
            except OSError:
                continue
        held = []
        for pid in pids:
            fd_dir = os.path.join(self.proc_root, str(pid), "fd")
            try:
                fds = os.listdir(fd_dir)[:MAX_FDS_READ]
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1].isdigit():
                    port = by_inode.get(int(target[8:-1]))
                    if port is not None:
                        held.append((pid, port))
        return held

