"""The viewer's end of the agent's socket: connect, then read lines in batches."""

from __future__ import annotations

import json
import socket
import time
from typing import Iterator, Optional


class NoAgent(Exception):
    """Nothing serves viewers at the socket path; the message says what to do."""


def connect(path: str) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        raise NoAgent(f"no agent is running: nothing serves viewers at {path} "
                      "(start one with `ebpfguard run`, or run the probes here with "
                      "`ebpfguard watch --standalone`)") from None
    except PermissionError:
        conn.close()
        raise NoAgent(f"cannot open {path}: permission denied (the agent's socket is root-only)") from None
    conn.shutdown(socket.SHUT_WR)  # the viewer only listens
    return conn


def raw_lines(conn: socket.socket, size: int = 1 << 16) -> Iterator[bytes]:
    """Complete lines as the agent sent them, until it closes the socket."""
    rest = b""
    while True:
        data = conn.recv(size)
        if not data:
            return
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        yield from lines


def parse_line(line: bytes) -> Optional[dict]:
    """A line as an event, or None when it is not a JSON object."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def batches(conn: socket.socket, interval_s: float = 0.05, max_events: int = 5000) -> Iterator[list[dict]]:
    """Events in batches of at most `max_events`, each at most `interval_s` old, so the UI
    gets a few messages per second however fast events come."""
    conn.settimeout(interval_s)
    rest = b""
    batch: list[dict] = []
    due = time.monotonic() + interval_s
    while True:
        try:
            data: Optional[bytes] = conn.recv(1 << 16)
        except socket.timeout:
            data = None
        if data == b"":
            break
        if data:
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            batch.extend(e for e in map(parse_line, lines) if e is not None)
        if batch and (len(batch) >= max_events or time.monotonic() >= due):
            yield batch
            batch = []
        if time.monotonic() >= due:
            due = time.monotonic() + interval_s
    if batch:
        yield batch
