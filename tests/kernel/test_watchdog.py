"""systemd's watchdog restarts an agent whose main loop stops (SIGSTOP).

Where systemd runs as PID 1, with a real `systemd-run` transient unit (Type=notify,
WatchdogSec=, Restart=on-failure). Elsewhere (a container, this CI host) by the same protocol
against a notify socket the test binds, the test playing systemd's part: READY=1, WATCHDOG=1
pings, then on a missed deadline the watchdog signal (SIGABRT, then SIGCONT) and a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import READY_TIMEOUT_S, RunningAgent

WATCHDOG_S = 2.0


def systemd_is_pid1() -> bool:
    done = subprocess.run(["systemctl", "is-system-running"], capture_output=True, text=True)
    return done.stdout.strip() in ("running", "degraded")


def messages_until(sock: socket.socket, deadline: float) -> list[str]:
    """Every notify message received before `deadline` (monotonic)."""
    got = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
    return got


def start_agent(workdir: Path, notify_path: str) -> RunningAgent:
    workdir.mkdir()
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC=str(int(WATCHDOG_S * 1e6)))
    # prlimit: the watchdog's SIGABRT should end the agent, not write a core file.
    return RunningAgent(workdir, env=env, wrapper=("prlimit", "--core=0", "--"))


def restarted_through_the_notify_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    first = start_agent(tmp_path / "first", path)
    try:
        said = messages_until(sock, time.monotonic() + 2 * WATCHDOG_S)
        assert said[0] == "READY=1" and said.count("WATCHDOG=1") >= 2, said
        os.kill(first.proc.pid, signal.SIGSTOP)
        messages_until(sock, time.monotonic() + 0.2)  # a ping already in flight
        stalled = messages_until(sock, time.monotonic() + 1.5 * WATCHDOG_S)
        assert "WATCHDOG=1" not in stalled, stalled
        # The deadline passed without a ping: what systemd does then.
        os.kill(first.proc.pid, signal.SIGABRT)
        os.kill(first.proc.pid, signal.SIGCONT)
        assert first.proc.wait(timeout=30) == -signal.SIGABRT
    finally:
        first.stop()
    second = start_agent(tmp_path / "second", path)
    try:
        said = messages_until(sock, time.monotonic() + 2 * WATCHDOG_S)
        assert "READY=1" in said and "WATCHDOG=1" in said, said
    finally:
        assert second.stop() == 0, second.stderr[-4000:]
        sock.close()


def unit_property(unit: str, name: str) -> str:
    done = subprocess.run(["systemctl", "show", "-p", name, "--value", unit], capture_output=True, text=True)
    return done.stdout.strip()


def restarted_by_systemd(tmp_path: Path) -> None:
    unit = f"ebpfguard-watchdog-{uuid.uuid4().hex[:8]}.service"
    subprocess.run([
        "systemd-run", "--unit", unit, "--collect",
        "-p", "Type=notify", "-p", "NotifyAccess=main", "-p", f"WatchdogSec={int(WATCHDOG_S)}s",
        "-p", "Restart=on-failure", "-p", "RestartSec=1s", "-p", "LimitCORE=0",
        "-p", f"TimeoutStartSec={READY_TIMEOUT_S}s",
        sys.executable, "-m", "ebpfguard", "run", "--output", str(tmp_path / "events.jsonl"),
        "--socket", "none", "--metrics-addr", "127.0.0.1:0",
    ], check=True, timeout=READY_TIMEOUT_S + 30)  # returns once READY=1 came (Type=notify)
    try:
        first_pid = unit_property(unit, "MainPID")
        assert unit_property(unit, "ActiveState") == "active" and first_pid != "0"
        os.kill(int(first_pid), signal.SIGSTOP)
        deadline = time.monotonic() + READY_TIMEOUT_S + 30
        while time.monotonic() < deadline:
            if (unit_property(unit, "NRestarts") not in ("", "0") and unit_property(unit, "ActiveState") == "active"
                    and unit_property(unit, "MainPID") not in ("0", first_pid)):
                break
            time.sleep(0.5)
        assert int(unit_property(unit, "NRestarts")) >= 1
        assert unit_property(unit, "ActiveState") == "active"
    finally:
        subprocess.run(["systemctl", "stop", unit], timeout=60)


def test_the_watchdog_restarts_an_agent_whose_main_loop_is_stopped(tmp_path):
    if systemd_is_pid1():
        restarted_by_systemd(tmp_path)
    else:
        restarted_through_the_notify_socket(tmp_path)
