"""The agent's control socket: JSON request/response lines over a local Unix socket.

Protocol (one request per line, one response line per request, in order; a client may send
several requests on one connection):

    request:  {"op": "<name>", "args": {...}}           (args optional)
    response: {"ok": true, "result": <any JSON>}
              {"ok": false, "error": "<why>", "code": "<machine-readable why>"}  (code optional)

Operations are registered by name (`ControlServer.handle(name, fn)`); `fn(args) -> result`
runs on the agent's main loop, so it must be quick. Registered now: `ping` and, with a
responder, `actions.list` and `actions.lift` ({"id": ...}). Access: the socket is created
mode 0600 and only root may use it (checked with SO_PEERCRED on each connection).

The server never blocks the agent's loop: the listener and connections are non-blocking,
requests are bounded (MAX_REQUEST_BYTES; a longer line closes the connection), and a client
that does not read its responses is dropped once MAX_PENDING_BYTES wait for it.

Clients: ebpfguard/client.py (`call(op, args)`), which the CLI uses too.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path
from typing import Any, Callable, Optional

from ebpfguard.client import DEFAULT_CONTROL_SOCKET
from ebpfguard.outputs.eventsocket import SocketBusy, _remove_stale

__all__ = ["DEFAULT_CONTROL_SOCKET", "ControlError", "ControlServer"]
MAX_REQUEST_BYTES = 65536
MAX_PENDING_BYTES = 1 << 20
MAX_CLIENTS = 16

Handler = Callable[[dict], Any]


class ControlError(Exception):
    """A request a handler refuses; its message goes back as the response's `error`, and
    `code` (when given) as its `code`, for clients to tell refusals apart."""

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


class _Client:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.inbox = b""
        self.outbox = b""


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class ControlServer:
    """Serves registered operations on a Unix socket, from the agent's loop (`serve()`)."""

    def __init__(self, listener: socket.socket, path: Path) -> None:
        self.listener = listener
        self.path = path
        self.handlers: dict[str, Handler] = {"ping": lambda _args: {"pid": os.getpid()}}
        self.clients: list[_Client] = []
        self.may_connect: Callable[[int], bool] = lambda uid: uid == 0

    @classmethod
    def open(cls, path: str) -> "ControlServer":
        """Bind `path` mode 0600 (its directory made root-only if new). A socket left by a dead
        agent is replaced; one a live agent answers on raises SocketBusy."""
        where = Path(path)
        where.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            _remove_stale(where)
        except SocketBusy:
            raise SocketBusy(f"another agent serves control requests on {where}") from None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(str(where))
        finally:
            os.umask(old)
        listener.listen(MAX_CLIENTS)
        listener.setblocking(False)
        return cls(listener, where)

    def handle(self, op: str, handler: Handler) -> None:
        """Register `handler(args) -> result` for requests of `op`."""
        self.handlers[op] = handler

    def serve(self) -> None:
        """Accept, read, answer: whatever can be done now without waiting."""
        self._accept()
        for client in list(self.clients):
            try:
                self._read(client)
                self._send(client)
            except OSError:
                self._drop(client)

    def close(self) -> None:
        for client in list(self.clients):
            self._drop(client)
        self.listener.close()
        self.path.unlink(missing_ok=True)

    def answer(self, line: bytes) -> dict:
        """The response to one request line."""
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "the request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": 'a request is {"op": NAME, "args": {...}}'}
        handler = self.handlers.get(request["op"])
        if handler is None:
            return {"ok": False, "error": f"unknown op {request['op']!r} (known: {', '.join(sorted(self.handlers))})"}
        args = request.get("args") or {}
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be an object"}
        try:
            return {"ok": True, "result": handler(args)}
        except ControlError as exc:
            refused = {"ok": False, "error": str(exc)}
            if exc.code is not None:
                refused["code"] = exc.code
            return refused
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the agent
            return {"ok": False, "error": f"{request['op']} failed: {type(exc).__name__}: {exc}"}

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            if len(self.clients) >= MAX_CLIENTS or not self.may_connect(peer_uid(conn)):
                conn.close()
                continue
            conn.setblocking(False)
            self.clients.append(_Client(conn))

    def _read(self, client: _Client) -> None:
        while True:
            try:
                chunk = client.conn.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                if not client.outbox:
                    raise OSError("closed")
                break
            client.inbox += chunk
            while b"\n" in client.inbox:
                line, client.inbox = client.inbox.split(b"\n", 1)
                if line.strip():
                    client.outbox += json.dumps(self.answer(line), separators=(",", ":")).encode() + b"\n"
            if len(client.inbox) > MAX_REQUEST_BYTES or len(client.outbox) > MAX_PENDING_BYTES:
                raise OSError("request too long, or responses not read")

    def _send(self, client: _Client) -> None:
        while client.outbox:
            try:
                sent = client.conn.send(client.outbox)
            except BlockingIOError:
                return
            client.outbox = client.outbox[sent:]

    def _drop(self, client: _Client) -> None:
        self.clients.remove(client)
        client.conn.close()

