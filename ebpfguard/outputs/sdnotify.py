"""systemd's notify protocol: READY=1 once the probes are attached, WATCHDOG=1 from the main
loop, so a unit with `WatchdogSec=` restarts an agent whose loop has stalled.

Fifteen lines over the NOTIFY_SOCKET datagram socket instead of a dependency: the protocol
is one sendto() per message (sd_notify(3)), and this way the environment is passed in, so a
test can bind its own socket and read what the agent says.
"""

from __future__ import annotations

import os
import socket
from typing import Mapping, Optional


class Notifier:
    """Sends notify messages to the socket systemd named; does nothing without one."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address: Optional[str] = address or None
        self.watchdog_s = self._watchdog_interval(environ)
        self._next_ping = 0.0
        self._sock: Optional[socket.socket] = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @staticmethod
    def _watchdog_interval(environ: Mapping[str, str]) -> Optional[float]:
        """WATCHDOG_USEC in seconds, when it is meant for this process (WATCHDOG_PID)."""
        usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6

    def send(self, message: str) -> bool:
        """One message (e.g. `READY=1`); False when there is no socket or it failed."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto(message.encode(), self.address)
        except OSError:
            return False  # systemd gone or restarting: the next ping tries again
        return True

    def ping_if_due(self, now: float) -> None:
        """WATCHDOG=1 at half the watchdog interval (sd_watchdog_enabled(3)'s advice)."""
        if self.watchdog_s is None or now < self._next_ping:
            return
        self.send("WATCHDOG=1")
        self._next_ping = now + self.watchdog_s / 2

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
