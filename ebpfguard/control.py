"""The agent's control socket: JSON request/response lines over a local Unix socket.

Protocol (one request per line, one response line per request, in order; a client may send
several requests on one connection):

    request:  {"op": "<name>", "args": {...}}           (args optional)
    response: {"ok": true, "result": <any JSON>}
              {"ok": false, "error": "<why>", "code": "<machine-readable why>"}  (code optional)

Operations are registered by name (`ControlServer.handle(name, fn)`); `fn(args, peer) ->
result` runs on the agent's main loop, so it must be quick. Registered: `ping`; with a
responder, `actions.list` and `actions.lift` ({"id": ...}), root only; for runners
(docs/runners.md), `report` ({"sandbox"}), `sandboxes`, and `watch` ({"sandbox"}), after whose
response the connection receives that sandbox's alerts and actions as JSON lines, as they are
written (a watcher that falls behind by MAX_PENDING_BYTES is told `{"kind": "skipped",
"missed": N}` once it catches up).

Access (ebpfguard/outputs/runner_access.py): the caller is known by SO_PEERCRED. Root on the
host may do everything; uids and groups the config's `clients.allow` names may connect and use
the runner operations for their sandboxes only; a caller inside a sandbox is refused. The
socket is mode 0600 unless some grant opens it to others (then 0666, access decided per
connection as above).

The server never blocks the agent's loop: the listener and connections are non-blocking,
requests are bounded (MAX_REQUEST_BYTES; a longer line closes the connection), and a client
that does not read its responses is dropped once MAX_PENDING_BYTES wait for it.

Clients: ebpfguard/client.py (`call(op, args)`), which the CLI uses too.
"""

from __future__ import annotations

import json
import os
import select
import socket
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ebpfguard.client import DEFAULT_CONTROL_SOCKET
from ebpfguard.outputs.eventsocket import SocketBusy, listen_private, skipped_line
from ebpfguard.outputs.runner_access import Peer, RunnerAccess, peer_of
from ebpfguard.outputs.sinks import to_json_bytes

__all__ = ["DEFAULT_CONTROL_SOCKET", "ControlError", "ControlServer"]
MAX_REQUEST_BYTES = 65536
MAX_PENDING_BYTES = 1 << 20
MAX_CLIENTS = 16

Handler = Callable[[dict, Peer], Any]


class ControlError(Exception):
    """A request a handler refuses; its message goes back as the response's `error`, and
    `code` (when given) as its `code`, for clients to tell refusals apart."""

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code


class Subscription:
    """What a handler returns to make its connection a stream: `result` answers the request,
    then every written line for which `wants(line)` is true follows."""

    def __init__(self, result: Any, wants: Callable[[dict], bool]) -> None:
        self.result = result
        self.wants = wants


class _Client:
    def __init__(self, conn: socket.socket, peer: Peer) -> None:
        self.conn = conn
        self.peer = peer
        self.inbox = b""
        self.outbox = b""
        self.wants: Optional[Callable[[dict], bool]] = None
        self.missed = 0  # streamed lines dropped since the watcher last caught up
        self.ended = False  # the client closed its side: only what waits is still sent
        self.events = select.EPOLLIN  # what the server's epoll waits for on it


class ControlServer:
    """Serves registered operations on a Unix socket, from the agent's loop (`serve()`)."""

    def __init__(self, listener: socket.socket, path: Path, access: RunnerAccess,
                 sandbox_settings: Mapping, proc_root: str = "/proc") -> None:
        self.listener = listener
        self.path = path
        self.access = access
        self.sandbox_settings = sandbox_settings
        self.proc_root = proc_root
        self.handlers: dict[str, Handler] = {"ping": lambda _args, _peer: {"pid": os.getpid()}}
        self.root_only: set[str] = set()
        self.clients: list[_Client] = []
        self.refused = 0  # connections refused (not allowed, or too many)
        # The listener and every connection, for the agent's loop to wait on (`fileno`).
        self._ready = select.epoll()
        self._ready.register(listener.fileno(), select.EPOLLIN)

    @classmethod
    def open(cls, path: str, access: RunnerAccess = RunnerAccess(()), sandbox_settings: Mapping = {}) -> "ControlServer":
        """Bind `path`, mode 0600, or 0666 when `access` lets others in (its directory made
        root-only if new, traversable when others may connect). A socket left by a dead agent
        is replaced; one a live agent answers on raises SocketBusy."""
        where = Path(path)
        try:
            listener = listen_private(where, MAX_CLIENTS)
        except SocketBusy:
            raise SocketBusy(f"another agent serves control requests on {where}") from None
        if access.open_to_others:
            os.chmod(where, 0o666)
            os.chmod(where.parent, os.stat(where.parent).st_mode & 0o7777 | 0o011)
        return cls(listener, where, access, sandbox_settings)

    def handle(self, op: str, handler: Handler, root_only: bool = True) -> None:
        """Register `handler(args, peer) -> result` (or a Subscription) for requests of `op`;
        only root on the host may use it unless `root_only` is False (the handler then
        checks what the peer may ask about)."""
        self.handlers[op] = handler
        if root_only:
            self.root_only.add(op)
        else:
            self.root_only.discard(op)

    def write(self, line: dict) -> bool:
        """Stream a written line to the watchers that want it (part of the sink protocol);
        sent now where the socket takes it, so a watcher hears of an alert at once."""
        for client in self.clients:
            if client.wants is None or not client.wants(line):
                continue
            data = (skipped_line(client.missed) if client.missed else b"") + to_json_bytes(line)
            if len(client.outbox) + len(data) > MAX_PENDING_BYTES:
                client.missed += 1
                continue
            client.outbox += data
            client.missed = 0
            try:
                self._send(client)
                self._watch(client)
            except OSError:
                pass  # dropped at the next serve()
        return True

    def write_all(self, lines: list) -> list[bool]:
        """write() for several lines (nothing to do while nobody watches)."""
        if not self.clients:
            return [True] * len(lines)
        return [self.write(line) for line in lines]

    def flush_if_due(self, now: Optional[float] = None) -> None:
        """Streams are sent as they are written (part of the sink protocol)."""

    def fileno(self) -> int:
        """A descriptor readable while `serve` has work: a connection to accept, a request to
        read, room to send what waits (the agent's loop wakes for it)."""
        return self._ready.fileno()

    def serve(self) -> None:
        """Accept, read, answer: whatever can be done now without waiting."""
        self._accept()
        for client in list(self.clients):
            try:
                self._read(client)
                self._send(client)
                self._watch(client)
            except OSError:
                self._drop(client)

    def close(self) -> None:
        for client in list(self.clients):
            self._drop(client)
        self.listener.close()
        self._ready.close()
        self.path.unlink(missing_ok=True)

    def answer(self, line: bytes, peer: Peer = Peer(0, 0, frozenset({0}), "host"),
               client: Optional[_Client] = None) -> dict:
        """The response to one request line from `peer` (a Subscription's result streams on
        `client`)."""
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
        if request["op"] in self.root_only and not (peer.uid == 0 and self.access.may_connect(peer)):
            return {"ok": False, "error": f"{request['op']} is for root only", "code": "forbidden"}
        try:
            result = handler(args, peer)
            if isinstance(result, Subscription):
                if client is not None:
                    client.wants = result.wants
                result = result.result
            return {"ok": True, "result": result}
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
            try:
                peer = peer_of(conn, self.sandbox_settings, self.proc_root)
            except OSError:
                conn.close()
                continue
            if len(self.clients) >= MAX_CLIENTS or not self.access.may_connect(peer):
                self.refused += 1
                conn.close()
                continue
            conn.setblocking(False)
            self.clients.append(_Client(conn, peer))
            self._ready.register(conn.fileno(), select.EPOLLIN)

    def _read(self, client: _Client) -> None:
        while True:
            try:
                chunk = client.conn.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                client.ended = True
                break
            client.inbox += chunk
            while b"\n" in client.inbox:
                line, client.inbox = client.inbox.split(b"\n", 1)
                if line.strip():
                    response = self.answer(line, client.peer, client)
                    client.outbox += json.dumps(response, separators=(",", ":")).encode() + b"\n"
            if len(client.inbox) > MAX_REQUEST_BYTES or len(client.outbox) > MAX_PENDING_BYTES:
                raise OSError("request too long, or responses not read")

    def _send(self, client: _Client) -> None:
        while client.outbox:
            try:
                sent = client.conn.send(client.outbox)
            except BlockingIOError:
                return
            client.outbox = client.outbox[sent:]

    def _watch(self, client: _Client) -> None:
        """Wait for a request while the client may send one, and for room while responses
        wait; a client that closed its side goes once they are sent."""
        if client.ended and not client.outbox:
            raise OSError("closed")
        events = (0 if client.ended else select.EPOLLIN) | (select.EPOLLOUT if client.outbox else 0)
        if events != client.events:
            self._ready.modify(client.conn.fileno(), events)
            client.events = events

    def _drop(self, client: _Client) -> None:
        self.clients.remove(client)
        try:
            self._ready.unregister(client.conn.fileno())
        except (OSError, ValueError):
            pass  # closed already
        client.conn.close()

