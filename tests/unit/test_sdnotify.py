"""The notify protocol against a socket the test binds, as systemd would."""

from __future__ import annotations

import os
import socket

from ebpfguard.outputs.sdnotify import Notifier


def bound(tmp_path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    return sock, path


def test_ready_and_watchdog_pings_at_half_the_interval(tmp_path):
    sock, path = bound(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.send("READY=1")
    notifier.ping_if_due(100.0)
    notifier.ping_if_due(100.5)  # not due: every 1 s for a 2 s watchdog
    notifier.ping_if_due(101.0)
    sock.setblocking(False)
    received = []
    while True:
        try:
            received.append(sock.recv(64).decode())
        except BlockingIOError:
            break
    assert received == ["READY=1", "WATCHDOG=1", "WATCHDOG=1"]
    notifier.close()


def test_an_abstract_socket_name_is_used_as_such():
    name = f"ebpfguard-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).send("READY=1")
    assert sock.recv(64) == b"READY=1"


def test_without_systemd_nothing_is_sent_and_nothing_fails():
    notifier = Notifier({})
    assert not notifier.send("READY=1")
    notifier.ping_if_due(1.0)


def test_a_watchdog_meant_for_another_process_is_ignored():
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "1000000"}).watchdog_s == 1.0
