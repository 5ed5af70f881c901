"""The real agent and the real viewer: an alert on the operator's screen, escapes kept off
it, and a viewer that never reads costing the agent nothing."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from typing import Callable, Optional, TypeVar

import pytest

from conftest import RunningAgent, has_arg, marker, miner_command_line

SCREEN_TIMEOUT_S = 10
FILTER_HINT = "(/ to edit, esc to clear)"  # the filter box's placeholder
T = TypeVar("T")


TMUX = ["tmux", "-L", "ebpfguard-test", "-f", "/dev/null"]  # our own server: no user config


def tmux(*args: str) -> str:
    return subprocess.run([*TMUX, *args], check=True, capture_output=True, text=True).stdout


def wait_until(check: Callable[[], T], what: str, timeout: float = SCREEN_TIMEOUT_S) -> T:
    """check()'s first truthy answer, asked every 0.1 s; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.1)


def screen_shows(session: str, needle: str, timeout: float = SCREEN_TIMEOUT_S) -> str:
    """The captured screen once it shows `needle`; fails after `timeout` seconds."""
    screens = [""]

    def shows() -> Optional[str]:
        screens[0] = tmux("capture-pane", "-p", "-t", session)
        return screens[0] if needle in screens[0] else None

    try:
        return wait_until(shows, f"{needle!r} on screen", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{screens[0]}") from None


def styled_line(session: str, needle: str) -> str:
    """The screen line holding `needle`, with its colours and styles as the terminal got them."""
    screen = tmux("capture-pane", "-p", "-e", "-t", session)
    return next((line for line in screen.splitlines() if needle in line), "")


@pytest.fixture
def served_agent(tmp_path):
    sock = tmp_path / "events.sock"
    running = RunningAgent(tmp_path, ("--socket", str(sock)))
    yield running, sock
    assert running.stop() == 0, running.stderr[-4000:]


@pytest.fixture
def viewer_in_tmux(served_agent, tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is needed (scripts/setup.sh --test installs it)")
    _, sock = served_agent
    session = f"ebpfguard-watch-{tmp_path.name}"
    # Without COLUMNS/LINES (a test runner may set them): Textual would take them over the pane's size.
    command = f"cd {tmp_path} && exec env -u COLUMNS -u LINES {sys.executable} -m ebpfguard watch --socket {sock}"
    tmux("new-session", "-d", "-s", session, "-x", "200", "-y", "50", command)
    yield session
    subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)


def test_sandboxed_miner_exec_alert_reaches_the_viewers_screen_and_escapes_stay_escaped(
        served_agent, viewer_in_tmux, make_cgroup, tmp_path):
    agent, _ = served_agent
    session = viewer_in_tmux
    screen_shows(session, "received")  # the viewer is up and connected
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    cg = make_cgroup("sandbox-")
    cg.run(["sh", "-c", miner_command_line(kworker)],
           capture_output=True)
    started = time.monotonic()
    screen = screen_shows(session, "miner.exec")
    assert time.monotonic() - started < SCREEN_TIMEOUT_S
    assert cg.path.name in screen

    # Other tests' host events scroll fast: watch this sandbox only, as an operator would.
    # Keys typed before the filter box has focus would go to the table's bindings: wait for
    # the box to be drawn focused (its colours change) before typing.
    unfocused = styled_line(session, FILTER_HINT)
    tmux("send-keys", "-t", session, "/")
    wait_until(lambda: styled_line(session, FILTER_HINT) != unfocused, "the filter box takes focus")
    tmux("send-keys", "-t", session, "-l", f"sandbox:{cg.path.name}")
    screen_shows(session, f"filter: sandbox:{cg.path.name}")
    token = marker()
    cg.run(["/bin/true", f"{token}\x1b[2Jgone"])
    agent.wait_for(has_arg(f"{token}\x1b[2Jgone"))
    screen = screen_shows(session, f"{token}\\x1b[2Jgone")
    # Had the escape reached the terminal, it would have cleared it: the alert and the
    # panels are still there.
    assert "miner.exec" in screen and "sandboxes" in screen and "alerts" in screen

    tmux("send-keys", "-t", session, "C-s")  # Textual's own SVG export, for docs/
    shots = wait_until(lambda: list(tmp_path.glob("*.svg")), "the screenshot is saved")
    wait_until(lambda: "</svg>" in shots[0].read_text(), "the screenshot is written out")
    assert "miner.exec" in shots[0].read_text()


def test_viewer_that_never_reads_costs_the_agent_no_events_and_is_told_what_it_missed(tmp_path, make_cgroup):
    sock = tmp_path / "events.sock"
    config = tmp_path / "small_viewer_buffer.yaml"
    config.write_text("viewer:\n  buffer_bytes: 65536\n")
    agent = RunningAgent(tmp_path, ("--socket", str(sock), "--config", str(config)))
    try:
        stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(str(sock))
        stuck.settimeout(0.2)
        cg = make_cgroup("sandbox-")
        token, hello = marker(), marker()

        def accepted() -> bool:
            # The first event reaching this viewer says the agent has taken it on; a quiet
            # host may have none to send, so the test makes some.
            cg.run(["/bin/true", hello])
            try:
                return bool(stuck.recv(4096))
            except socket.timeout:
                return False

        wait_until(accepted, "the agent accepts the viewer")
        n = 2000
        cg.run(["sh", "-c", f'i=0; while [ $i -lt {n} ]; do /bin/true {token} $i; i=$((i+1)); done'])
        agent.wait_for(has_arg(str(n - 1)), timeout=60)
        written = [e for e in agent.events() if e["kind"] == "exec" and token in e["process"]["argv"]]
        assert len(written) == n  # the agent's output has every one

        stuck.settimeout(2)
        got = b""
        while b'"kind":"skipped"' not in got:  # the stuck viewer reads at last
            got += stuck.recv(1 << 16)
        stuck.close()
        marker_line = next(line for line in got.split(b"\n") if b'"kind":"skipped"' in line)
        missed = json.loads(marker_line)["missed"]
    finally:
        assert agent.stop() == 0, agent.stderr[-4000:]
    summary = json.loads(agent.stderr.split("stopped: ")[-1])
    # Counted where the metrics read it (other tests' host events may add to it meanwhile).
    assert missed > 0 and summary["dropped"]["viewer/slow_reader"] >= missed
    assert set(summary["dropped"]) == {"viewer/slow_reader"} and not summary["lost"]
