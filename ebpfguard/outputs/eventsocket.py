"""The agent's event socket: the event and alert stream, as JSON Lines, to local viewers.

It lives inside the agent's single-threaded loop, so nothing here may block: the listening
socket and every viewer's connection are non-blocking, and each viewer has a bounded buffer.
A viewer that reads too slowly to keep its buffer under the bound is skipped ahead: the
events it misses are counted (stats.dropped["viewer", "slow_reader"]) and, once its buffer
has drained, it is sent one `skipped` line saying how many it missed before the stream
resumes. The agent never waits for a viewer and never loses an event on a viewer's account.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import time
from collections import deque
from pathlib import Path
from typing import Optional

from ebpfguard.clock import rfc3339_ns
from ebpfguard.outputs.sinks import to_json_bytes
from ebpfguard.outputs.stats import PipelineStats

DEFAULT_SOCKET = "/run/ebpfguard/events.sock"
SKIPPED_KIND = "skipped"


class SocketBusy(Exception):
    """Another live agent already serves viewers on this path."""


def skipped_line(missed: int) -> bytes:
    """The marker a skipped-ahead viewer gets before the stream resumes."""
    marker = {"kind": SKIPPED_KIND, "time": rfc3339_ns(time.time_ns()), "missed": missed}
    return to_json_bytes(marker)


class Viewer:
    """One connected viewer: its socket, what is queued for it, and what it missed."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.missed = 0  # events dropped for this viewer since it last caught up

    def enqueue(self, line: bytes) -> None:
        self.queue.append(line)
        self.queued_bytes += len(line)

    def send_some(self) -> None:
        """Send as much as the kernel takes now; raises OSError when the viewer is gone."""
        while self.queue:
            # Join small lines so one send() carries many (a syscall per event is the cost).
            parts, size = [], 0
            while self.queue and size < 65536:
                parts.append(self.queue.popleft())
                size += len(parts[-1])
            chunk = b"".join(parts)
            try:
                sent = self.conn.send(chunk)
            except BlockingIOError:
                sent = 0
            self.queued_bytes -= sent
            if sent < len(chunk):
                self.queue.appendleft(chunk[sent:])
                return


class EventSocket:
    """Listens on a Unix socket and fans every event out to the viewers connected to it."""

    def __init__(self, listener: socket.socket, path: Path, stats: PipelineStats,
                 buffer_bytes: int, max_viewers: int) -> None:
        self.listener = listener
        self.path = path
        self.stats = stats
        self.buffer_bytes = buffer_bytes
        self.max_viewers = max_viewers
        self.viewers: list[Viewer] = []

    @classmethod
    def open(cls, path: str, stats: PipelineStats, buffer_bytes: int, max_viewers: int) -> "EventSocket":
        """Bind `path` (its directory made root-only if new), mode 0600 from the start.

        A socket file left by an agent that died is replaced; one a live agent answers on is
        not (SocketBusy).
        """
        where = Path(path)
        return cls(listen_private(where, 16), where, stats, buffer_bytes, max_viewers)

    def write(self, event: dict) -> bool:
        """Queue one event for every viewer, skipping any viewer whose buffer is full."""
        if not self.viewers:
            return True
        line = to_json_bytes(event)
        for viewer in self.viewers:
            if viewer.missed or viewer.queued_bytes + len(line) > self.buffer_bytes:
                viewer.missed += 1
                self.stats.drop("viewer", "slow_reader")
            else:
                viewer.enqueue(line)
        return True

    def write_all(self, events: list) -> list[bool]:
        """write() for several events (nothing to do while no viewer is connected)."""
        if not self.viewers:
            return [True] * len(events)
        return [self.write(event) for event in events]

    def fileno(self) -> int:
        """The listener's descriptor: readable while a viewer waits to be accepted."""
        return self.listener.fileno()

    def flush_if_due(self, now: Optional[float] = None) -> None:
        """Called every turn of the agent's loop: accept viewers and send what is queued."""
        self._accept()
        for viewer in list(self.viewers):
            try:
                viewer.send_some()
            except OSError:
                self._forget(viewer)
                continue
            if viewer.missed and not viewer.queue:
                # Caught up: say what it missed, then it gets events again.
                viewer.enqueue(skipped_line(viewer.missed))
                viewer.missed = 0

    def close(self) -> None:
        for viewer in list(self.viewers):
            self._forget(viewer)
        self.listener.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self.viewers) >= self.max_viewers or not _peer_may_watch(conn):
                conn.close()
                continue
            conn.setblocking(False)
            conn.shutdown(socket.SHUT_RD)  # viewers only listen
            self.viewers.append(Viewer(conn))

    def _forget(self, viewer: Viewer) -> None:
        self.viewers.remove(viewer)
        viewer.conn.close()


def _peer_may_watch(conn: socket.socket) -> bool:
    """Root, or the agent's own user: events name every sandbox's processes and arguments.

    The 0600 mode already says so; this also holds when the directory or mode was loosened.
    """
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid in (0, os.geteuid())


def listen_private(where: Path, backlog: int) -> socket.socket:
    """A non-blocking listener bound at `where`, mode 0600 from the start (its directory made
    root-only if new). A socket file left by an agent that died is replaced; one a live agent
    answers on is not (SocketBusy)."""
    where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale(where)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask, not a chmod after bind, so the socket is never reachable by others.
    old = os.umask(0o177)
    try:
        listener.bind(str(where))
    finally:
        os.umask(old)
    listener.listen(backlog)
    listener.setblocking(False)
    return listener


def _remove_stale(path: Path) -> None:
    """Unlink a socket a killed agent left at `path`; refuse anything else.

    Only a socket (never a symlink: lstat, and the name looked up in the directory opened
    once), owned by this user, that nobody listens on is removed, and only if it is still
    that same inode when it is unlinked.
    """
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            found = os.stat(path.name, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(found.st_mode):
            raise OSError(errno.EEXIST, "exists and is not a socket (left as it is)", str(path))
        if found.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"a socket of another user (uid {found.st_uid}), not ours to replace", str(path))
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Through the directory already opened: the name cannot be moved under us.
            probe.connect(f"/proc/self/fd/{directory}/{path.name}")
        except (ConnectionRefusedError, FileNotFoundError):
            pass
        else:
            raise SocketBusy(f"another agent is serving viewers on {path}")
        finally:
            probe.close()
        again = os.stat(path.name, dir_fd=directory, follow_symlinks=False)
        if (again.st_dev, again.st_ino) != (found.st_dev, found.st_ino):
            raise OSError(errno.EAGAIN, "replaced while it was checked", str(path))
        os.unlink(path.name, dir_fd=directory)
    finally:
        os.close(directory)
