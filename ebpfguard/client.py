"""The runner's client: ask the running agent about a sandbox, or be told of its alerts.

For RL harnesses, coding-agent platforms and CI runners that start and end sandboxes: no bcc,
no root needed (the agent's config names the uids and groups allowed, and which sandboxes
each may ask about). Both calls speak the agent's control socket (ebpfguard/control.py):

    from ebpfguard import client

    for alert in client.watch("sandbox-episode-17"):      # as they happen
        print(alert["rule"], alert["summary"])
        break
    report = client.verdict("sandbox-episode-17")        # at the end of the episode
    if report["verdict"] == "flagged":
        ...

`watch` is filtered by the agent (only that sandbox's alerts cross the socket); `verdict`
returns the report of ebpfguard/outputs/report.py. Errors: `NoAgent` when nothing answers,
`Refused` when the agent says no (not allowed, unknown sandbox).
"""

from __future__ import annotations

import json
import socket
from typing import Any, Optional

DEFAULT_CONTROL_SOCKET = "/run/ebpfguard/control.sock"
MAX_LINE_BYTES = 16 << 20
CLOSED_ON_US = ("the agent closed the connection: this caller is not allowed to ask "
                "(root on the host, or a uid or group in the config's clients.allow)")


class NoAgent(Exception):
    """No agent answers on the control socket."""


class Refused(Exception):
    """The agent refused the request; the message says why."""


class UnknownSandbox(Refused):
    """The agent keeps no history of that sandbox (never seen, or expired)."""


def _connect(path: str, timeout_s: Optional[float]) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout_s)
    try:
        conn.connect(path)
    except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
        conn.close()
        raise NoAgent(f"no agent answers on {path}: {exc.strerror}") from None
    return conn


class _Lines:
    """Newline-delimited JSON from a socket, each line bounded."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def next(self) -> dict:
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE_BYTES:
                raise Refused("the agent sent a line longer than this client accepts")
            try:
                chunk = self.conn.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Refused(CLOSED_ON_US)
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def _send(conn: socket.socket, request: dict) -> None:
    """Send one request line. The agent closes a connection it refuses at once, which may be
    before the request is sent."""
    try:
        conn.sendall(json.dumps(request).encode() + b"\n")
    except (BrokenPipeError, ConnectionResetError):
        raise Refused(CLOSED_ON_US) from None


def _check(response: dict) -> Any:
    if response.get("ok"):
        return response.get("result")
    error = str(response.get("error", "refused"))
    raise (UnknownSandbox if response.get("code") == "unknown_sandbox" else Refused)(error)


def call(op: str, args: Optional[dict] = None, path: str = DEFAULT_CONTROL_SOCKET, timeout_s: float = 5.0) -> Any:
    """One request to the agent; its result."""
    conn = _connect(path, timeout_s)
    try:
        _send(conn, {"op": op, "args": args or {}})
        return _check(_Lines(conn).next())
    except socket.timeout:
        raise NoAgent(f"the agent on {path} did not answer within {timeout_s:g}s") from None
    finally:
        conn.close()


def verdict(sandbox: str, path: str = DEFAULT_CONTROL_SOCKET, timeout_s: float = 5.0) -> dict:
    """The sandbox's report: `{"sandbox", "verdict": "clean"|"flagged", "alerts", "processes",
    "connections", ...}`. Raises UnknownSandbox if the agent has no history of it."""
    return call("report", {"sandbox": sandbox}, path, timeout_s)


class Watch:
    """The stream `watch()` returns: iterate it for alerts and actions; `close()` it (or use
    it as a context manager) when done. Subscribed when made, so nothing written after the
    call is missed."""

    def __init__(self, sandbox: str, path: str, timeout_s: Optional[float]) -> None:
        self.conn = _connect(path, 5.0)
        try:
            _send(self.conn, {"op": "watch", "args": {"sandbox": sandbox}})
            self.lines = _Lines(self.conn)
            _check(self.lines.next())
        except BaseException:
            self.conn.close()
            raise
        self.conn.settimeout(timeout_s)

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> dict:
        return self.lines.next()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()


def watch(sandbox: str, path: str = DEFAULT_CONTROL_SOCKET, timeout_s: Optional[float] = None) -> Watch:
    """The sandbox's alerts (and actions) as the agent writes them, until the caller closes
    the stream or the agent goes away (NoAgent). `timeout_s` bounds each wait for the next
    one (TimeoutError past it); None waits for ever."""
    return Watch(sandbox, path, timeout_s)
