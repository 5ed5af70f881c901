"""Alerts as RFC 5424 syslog messages, with structured data, over UDP, TCP or the local socket.

    <PRI>1 TIMESTAMP HOSTNAME ebpfguard PROCID RULE [ebpfguard@32473 rule="..." ...] MSG

PRI is the configured facility and the alert's severity mapped to syslog's. TCP frames each
message by octet counting (RFC 6587, `LEN SP MSG`), so no byte of a message (a newline in a
sandbox's argv) can split it; UDP sends one datagram per message (RFC 5426); `unix://PATH`
sends datagrams to a local socket such as /dev/log. 32473 is the enterprise number RFC 5612
reserves for examples: our SD-ID is not registered with IANA, and says so.
"""

from __future__ import annotations

import os
import select
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from ebpfguard.outputs import alertview
from ebpfguard.outputs.delivery import OneShot, TransientError

SD_ID = "ebpfguard@32473"
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21,
    "local6": 22, "local7": 23,
}
# Our severities as syslog's (0 emerg .. 7 debug).
SEVERITIES = {"critical": 2, "high": 3, "medium": 4, "low": 5, "info": 6}
NIL = "-"
BOM = b"\xef\xbb\xbf"


def sd_escape(value: str) -> str:
    """A PARAM-VALUE: `"`, `\\` and `]` escaped with a backslash (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def header_field(value: Optional[str], limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most `limit`, or `-`."""
    cleaned = "".join(c for c in (value or "") if 33 <= ord(c) <= 126)[:limit]
    return cleaned or NIL


def timestamp(rfc3339: Optional[str]) -> str:
    """Our RFC 3339 time with at most 6 fraction digits (TIME-SECFRAC), or `-`."""
    if not rfc3339 or len(rfc3339) < 20:
        return NIL
    whole, dot, rest = rfc3339.partition(".")
    if not dot:
        return rfc3339
    digits = rest.rstrip("Zz")
    zone = rest[len(digits):] or "Z"
    return f"{whole}.{digits[:6]}{zone}"


def sd_params(alert: dict) -> list[tuple[str, str]]:
    """(name, value) pairs of our SD element; only known values."""
    proc, box = alertview.process(alert), alertview.sandbox(alert)
    pairs = [
        ("rule", alert.get("rule")), ("severity", alert.get("severity")), ("sandbox", box.get("name")),
        ("runtime", box.get("runtime")), ("pod", box.get("pod")), ("namespace", box.get("namespace")),
        ("container_id", box.get("container_id")), ("node", alert.get("node")), ("pid", proc.get("pid")),
        ("comm", proc.get("comm")), ("exe", proc.get("exe")), ("cmdline", alertview.command_line(alert, 512)),
        ("tags", ",".join(str(t) for t in alert.get("tags") or [])), ("evidence", alertview.evidence_text(alert, 512)),
    ]
    return [(name, alertview.text(value, 512)) for name, value in pairs if value is not None and value != ""]


def format_message(alert: dict, facility: int, app_name: str, procid: int, max_bytes: int) -> bytes:
    """One alert as an RFC 5424 message of at most `max_bytes` (long values are cut first,
    then the free-text MSG)."""
    severity = SEVERITIES.get(alert.get("severity"), 4)
    header = " ".join((
        f"<{facility * 8 + severity}>1", timestamp(alert.get("time")), header_field(alert.get("node"), 255),
        header_field(app_name, 48), header_field(str(procid), 128), header_field(alert.get("rule"), 32),
    )).encode("ascii")
    params = sd_params(alert)
    msg = alertview.text(f"{alert.get('summary') or alert.get('rule')} (sandbox {alertview.sandbox(alert).get('name')})")

    def sd() -> bytes:
        inner = " ".join(f'{name}="{sd_escape(value)}"' for name, value in params)
        return f"[{SD_ID} {inner}]".encode("utf-8", "backslashreplace") if params else NIL.encode()

    while len(header) + 1 + len(sd()) > max_bytes - 1 and params:
        longest = max(range(len(params)), key=lambda i: len(params[i][1]))
        name, value = params[longest]
        if len(value) <= 8:
            params.pop(longest)
        else:
            params[longest] = (name, value[: len(value) // 2] + "...")
    head = header + b" " + sd()
    body = msg.encode("utf-8", "backslashreplace")
    if not body.isascii():
        body = BOM + body
    room = max_bytes - len(head) - 1
    if room <= len(BOM) + 3:
        return head
    if len(body) > room:
        body = body[:room].decode("utf-8", "ignore").encode("utf-8")  # never half a character
    return head + b" " + body


class SyslogFormat(OneShot):
    """Each alert at or above `min_severity` as one RFC 5424 message."""

    def __init__(self, min_severity: str, facility: str, app_name: str, max_bytes: int) -> None:
        self.min_severity = min_severity
        self.facility = FACILITIES[facility]
        self.app_name = app_name
        self.max_bytes = max_bytes
        self.procid = os.getpid()

    def accepts(self, event: dict) -> bool:
        return alertview.wants(event, self.min_severity)

    def payloads(self, item: dict, now: float) -> list[bytes]:
        return [format_message(item, self.facility, self.app_name, self.procid, self.max_bytes)]


@dataclass(frozen=True)
class SyslogAddress:
    """`udp://HOST:PORT`, `tcp://HOST:PORT` or `unix:///PATH`."""

    transport: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "SyslogAddress":
        parts = urllib.parse.urlsplit(text)
        if parts.scheme == "unix":
            if not parts.path.startswith("/"):
                raise ValueError(f"'{text}': a local socket is unix:///absolute/path")
            return cls("unix", path=parts.path)
        if parts.scheme not in ("udp", "tcp"):
            raise ValueError(f"'{text}' is not udp://HOST:PORT, tcp://HOST:PORT or unix:///PATH")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"'{text}' needs a host and a port (e.g. {parts.scheme}://127.0.0.1:514)")
        return cls(parts.scheme, parts.hostname, port)

    def __str__(self) -> str:
        if self.transport == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


class SyslogSender:
    """Sends messages to one address; a TCP connection is kept and re-made after a failure."""

    def __init__(self, address: SyslogAddress, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.where = str(address)
        self._sock: Optional[socket.socket] = None

    def _connect(self) -> socket.socket:
        a = self.address
        if a.transport == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.settimeout(self.timeout_s)
            sock.connect(a.path)
            return sock
        kind = socket.SOCK_STREAM if a.transport == "tcp" else socket.SOCK_DGRAM
        family, _, _, _, sockaddr = socket.getaddrinfo(a.host, a.port, type=kind)[0]
        sock = socket.socket(family, kind)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(sockaddr)
        except OSError:
            sock.close()
            raise
        return sock

    def _peer_closed(self) -> bool:
        """Whether the TCP receiver closed our connection: a send would still succeed, into
        a buffer nobody reads, so the message would be lost without an error."""
        ready, _, _ = select.select([self._sock], [], [], 0)
        if not ready:
            return False
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False

    def __call__(self, payload: bytes) -> None:
        try:
            if self._sock is not None and self.address.transport == "tcp" and self._peer_closed():
                self.close()
            if self._sock is None:
                self._sock = self._connect()
            if self.address.transport == "tcp":
                self._sock.sendall(f"{len(payload)} ".encode() + payload)
            else:
                self._sock.send(payload)
        except OSError as exc:
            self.close()
            raise TransientError(f"{self.where}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
