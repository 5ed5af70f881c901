"""Kernel tests: real probes in the running kernel, real cgroups, one shared agent.

Each bcc compile costs seconds on two cores, so one agent serves every test that can share
it; tests find their own events by a unique marker, cgroup or pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from ebpfguard.enrich.sandbox import cgroup_root_from_proc

READY_TIMEOUT_S = 120
EVENT_TIMEOUT_S = 10


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/kernel" in str(item.fspath):
            item.add_marker(pytest.mark.kernel)


@pytest.fixture(scope="session", autouse=True)
def _needs_root():
    if os.geteuid() != 0:
        pytest.fail("kernel tests load BPF programs: run them as root (unit tests: tests/unit)")


class RunningAgent:
    """An `ebpfguard run` process writing JSON Lines to a file that tests read.

    Its metrics endpoint is on a free loopback port (unless `args` name one), so agents of
    concurrent tests never collide on the default port.
    """

    def __init__(self, workdir: Path, args: tuple[str, ...] = (), env: Optional[dict] = None,
                 wrapper: tuple[str, ...] = (), command: tuple[str, ...] = (sys.executable, "-m", "ebpfguard"),
                 cwd: Optional[Path] = None) -> None:
        """`wrapper` is a command prefix the agent runs under (e.g. setpriv with fewer privileges);
        `command` the ebpfguard to run (an installed one, say), in `cwd`."""
        self.output = workdir / "events.jsonl"
        self.stderr_path = workdir / "agent.stderr"
        self._stderr = open(self.stderr_path, "w")
        if "--socket" not in args:
            # Agents in tests run side by side: none takes the host's default viewer socket...
            args = ("--socket", "none", *args)
        if "--control-socket" not in args:
            # ...or its default control socket.
            args = ("--control-socket", "none", *args)
        if "--metrics-addr" not in args:
            args = (*args, "--metrics-addr", "127.0.0.1:0")
        self.proc = subprocess.Popen(
            [*wrapper, *command, "run", "--output", str(self.output), *args],
            stdout=subprocess.DEVNULL, stderr=self._stderr, env=env, cwd=cwd,
        )
        self._offset = 0
        self._seen: list[dict] = []
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if "ready" in self.stderr_path.read_text().splitlines():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"agent did not become ready:\n{self.stderr_path.read_text()[-4000:]}")

    @property
    def metrics_url(self) -> str:
        """The agent's /metrics URL, as it announced it on stderr."""
        found = re.search(r"^ebpfguard: metrics on (\S+)$", self.stderr, re.MULTILINE)
        assert found, f"the agent announced no metrics endpoint:\n{self.stderr[-4000:]}"
        return found.group(1)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def raw_lines(self) -> list[str]:
        return self.output.read_text().splitlines() if self.output.exists() else []

    def forget(self) -> None:
        """Drop the events read so far: a busy host writes hundreds of thousands of them in
        a session, and each test only looks at what happens after it starts."""
        self.events()
        self._seen = []

    def events(self) -> list[dict]:
        """Every event written since the last forget() (read incrementally)."""
        if self.output.exists():
            with open(self.output) as f:
                f.seek(self._offset)
                chunk = f.read()
            complete, _, _rest = chunk.rpartition("\n")
            if complete:
                self._offset += len(complete) + 1
                self._seen.extend(json.loads(line) for line in complete.split("\n"))
        return self._seen

    def wait_for(self, match: Callable[[dict], bool], timeout: float = EVENT_TIMEOUT_S) -> dict:
        """The first event that matches, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if match(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching event within {timeout}s")
            if self.proc.poll() is not None:
                raise AssertionError(f"agent died:\n{self.stderr[-4000:]}")
            time.sleep(0.05)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def agent(tmp_path_factory) -> Iterator[RunningAgent]:
    running = RunningAgent(tmp_path_factory.mktemp("agent"), ("--rules", str(Path(__file__).parent / "rules_overlay.yaml")))
    yield running
    assert running.stop() == 0, running.stderr[-4000:]


@pytest.fixture(autouse=True)
def _fresh_events(request):
    """Tests that use the shared agent see only the events written from their start on."""
    if "agent" in request.fixturenames:
        request.getfixturevalue("agent").forget()


@pytest.fixture(scope="session")
def cgroup_root() -> Path:
    root = cgroup_root_from_proc()
    assert root, "no cgroup2 mount on this host"
    return Path(root)


class Cgroup:
    """A cgroup made by a test under the cgroup2 mount, removed afterwards."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path = path
        self.root = root
        self.rel = "/" + str(path.relative_to(root))
        path.mkdir(parents=True)

    def child(self, name: str) -> "Cgroup":
        return Cgroup(self.path / name, self.root)

    def enter(self) -> None:
        """Move the calling process into this cgroup (use as a preexec_fn)."""
        (self.path / "cgroup.procs").write_text("0")

    def run(self, argv, **kwargs) -> subprocess.CompletedProcess:
        """Run argv inside this cgroup and wait for it."""
        return subprocess.run(argv, preexec_fn=self.enter, **kwargs)

    def popen(self, argv, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(argv, preexec_fn=self.enter, **kwargs)

    def remove(self) -> None:
        for child in sorted(self.path.rglob("*"), key=lambda p: -len(p.parts)):
            if child.is_dir():
                _rmdir_when_empty(child)
        _rmdir_when_empty(self.path)


def _rmdir_when_empty(path: Path) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def make_cgroup(cgroup_root) -> Iterator[Callable[[str], Cgroup]]:
    """make_cgroup("sandbox-") -> a fresh cgroup named that prefix plus a random suffix."""
    made: list[Cgroup] = []

    def make(prefix: str) -> Cgroup:
        cg = Cgroup(cgroup_root / f"{prefix}{uuid.uuid4().hex[:8]}", cgroup_root)
        made.append(cg)
        return cg

    yield make
    for cg in reversed(made):
        cg.remove()


# A Monero-shaped address (95 base58 characters starting with 4), for miner-like argv.
WALLET = "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD"


def miner_command_line(binary, *extra: str) -> str:
    """A shell command that starts `binary` the way an XMRig-style miner is started."""
    return " ".join([str(binary), "-o stratum+tcp://pool.example.net:3333", f"-u {WALLET}", *extra, "--donate-level 1"])


def marker() -> str:
    """A unique argument that lets a test find its own events."""
    return f"ebpfguard-test-{uuid.uuid4().hex[:12]}"


def has_arg(token: str, kind: str = "exec") -> Callable[[dict], bool]:
    return lambda e: e["kind"] == kind and token in e["process"]["argv"]


def alert_for(rule: str, match: Callable[[dict], bool] = lambda e: True) -> Callable[[dict], bool]:
    """Matches alerts of `rule` whose triggering event matches."""
    return lambda e: e["kind"] == "alert" and e["rule"] == rule and match(e["event"])
