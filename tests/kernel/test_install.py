"""Installs as a user would: `make install` builds the wheel and puts it in a fresh venv
outside the checkout; that install's `doctor`, `run`, `watch` and `replay` work from a
directory that is not the checkout; every file the unit would execute is root's alone; `make uninstall`
removes all of it. And `make run` writes only events on stdout (`make run | jq` works).

The install goes to a PREFIX of its own under /opt (root's, like /opt/ebpfguard, and not a
world-writable /tmp) and the unit, logrotate snippet and PATH link to a temporary directory,
so a real install on the host is left alone.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from conftest import RunningAgent, has_arg, marker

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "corpus"


class Install:
    def __init__(self, prefix: Path, etc: Path) -> None:
        self.prefix = prefix
        self.bindir, self.unitdir, self.logrotatedir = etc / "bin", etc / "systemd", etc / "logrotate.d"
        self.unit = self.unitdir / "ebpfguard.service"
        self.ebpfguard = prefix / "bin" / "ebpfguard"

    def make(self, target: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "--no-print-directory", target, f"PREFIX={self.prefix}", f"BINDIR={self.bindir}",
             f"UNITDIR={self.unitdir}", f"LOGROTATEDIR={self.logrotatedir}"],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    install = Install(Path(f"/opt/ebpfguard-test-{uuid.uuid4().hex[:8]}"), tmp_path_factory.mktemp("etc"))
    done = install.make("install")
    assert done.returncode == 0, done.stderr[-4000:]
    yield install
    if install.prefix.exists():  # a test failed before uninstalling
        install.make("uninstall")


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working directory outside the checkout: nothing may be found relative to it."""
    assert REPO not in tmp_path.parents
    return tmp_path


def test_the_installed_doctor_says_the_agent_can_run(installed, elsewhere):
    done = subprocess.run([str(installed.ebpfguard), "doctor"], cwd=elsewhere, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the agent can run here" in done.stdout


def execs_until(sandbox, token: str, seen: threading.Event, alive) -> threading.Thread:
    """A thread that runs `/bin/true token` in the sandbox until `seen` is set (or `alive()`
    turns false): a reader may not be listening yet, and a quiet host gives it nothing else."""
    def run() -> None:
        while not seen.wait(0.2) and alive():
            sandbox.run(["/bin/true", token], check=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_installed_agent_and_viewer_run_from_outside_the_checkout(installed, elsewhere, make_cgroup):
    sock = elsewhere / "events.sock"
    agent = RunningAgent(elsewhere, ("--socket", str(sock)), command=(str(installed.ebpfguard),), cwd=elsewhere)
    viewer = subprocess.Popen([str(installed.ebpfguard), "watch", "--json", "--socket", str(sock)],
                              cwd=elsewhere, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sandbox, token, seen = make_cgroup("sandbox-"), marker(), threading.Event()
    driver = execs_until(sandbox, token, seen, lambda: viewer.poll() is None)
    try:
        event = agent.wait_for(has_arg(token), timeout=30)
        assert event["sandbox"]["runtime"] == "pattern" and event["retval"] == 0
        for line in viewer.stdout:  # the viewer shows it too
            if token in line:
                assert json.loads(line)["process"]["argv"] == ["/bin/true", token]
                break
        else:
            raise AssertionError(f"the viewer ended: {viewer.stderr.read()[-2000:]}")
    finally:
        seen.set()
        driver.join()
        viewer.kill()
        viewer.wait()
        assert agent.stop() == 0, agent.stderr[-4000:]
    assert "ready" in agent.stderr.splitlines()


def test_the_installed_replay_finds_the_corpus_tunnels(installed, elsewhere):
    corpus = elsewhere / "tunnels.jsonl"
    corpus.write_bytes((CORPUS / "exec_tunnels.jsonl").read_bytes())
    done = subprocess.run([str(installed.ebpfguard), "replay", str(corpus)], cwd=elsewhere,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # 1: alerts found
    rules = {json.loads(line)["rule"] for line in done.stdout.splitlines()}
    assert {"tunnel.ssh_remote_forward", "tunnel.other"} <= rules


def test_the_installed_unit_runs_the_install_and_systemd_accepts_it(installed):
    exec_start = next(line for line in installed.unit.read_text().splitlines() if line.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split()[0] == str(installed.ebpfguard)
    done = subprocess.run(["systemd-analyze", "verify", str(installed.unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    assert os.readlink(installed.bindir / "ebpfguard") == str(installed.ebpfguard)


def executed_paths(install: Install) -> set[Path]:
    """What the unit's ExecStart runs: the script, its interpreter, and every directory the
    interpreter imports from (sys.path), with their contents."""
    script = install.ebpfguard
    interpreter = Path(script.read_text().splitlines()[0].removeprefix("#!").split()[0])
    sys_path = subprocess.run([str(interpreter), "-c", "import sys; print('\\n'.join(p for p in sys.path if p))"],
                              capture_output=True, text=True, check=True).stdout.split()
    paths = {script, interpreter, interpreter.resolve(), install.unit}
    for entry in map(Path, sys_path):
        if entry.exists():
            paths.add(entry)
            if entry.is_dir():
                paths.update(entry.rglob("*"))
    return paths


def test_every_file_the_unit_executes_is_roots_and_writable_by_root_only(installed):
    paths = executed_paths(installed)
    assert any(installed.prefix in p.parents and p.name == "agent.py" for p in paths)  # the package is in
    with_parents = set(paths)
    for path in paths:
        with_parents.update(path.parents)
    unsafe = []
    for path in with_parents:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue  # a link's own mode means nothing; its target is in the set too
        # The one exception is this test's own: UNITDIR is a temporary directory under /tmp.
        if path in installed.unit.parents and info.st_mode & stat.S_ISVTX:
            continue
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            unsafe.append(f"{path} uid={info.st_uid} mode={stat.filemode(info.st_mode)}")
    assert not unsafe, "\n".join(sorted(unsafe)[:20])


def test_uninstall_removes_the_venv_unit_logrotate_and_link(installed):
    done = installed.make("uninstall")
    assert done.returncode == 0, done.stderr
    left = [p for p in (installed.prefix, installed.unit, installed.logrotatedir / "ebpfguard",
                        installed.bindir / "ebpfguard") if os.path.lexists(p)]
    assert left == []


def test_make_run_writes_only_json_events_on_stdout(make_cgroup, tmp_path):
    stderr = tmp_path / "make.stderr"
    with open(stderr, "w") as err:
        make = subprocess.Popen(["make", "--no-print-directory", "run", "ARGS=--socket none --control-socket none --metrics-addr none"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    sandbox, token, seen = make_cgroup("sandbox-"), marker(), threading.Event()
    driver = execs_until(sandbox, token, seen, lambda: make.poll() is None)
    lines = []
    try:
        for line in make.stdout:
            lines.append(json.loads(line))  # the first line too: no make chatter before it
            if token in (lines[-1].get("process") or {}).get("argv", []):
                break
        assert lines and token in lines[-1]["process"]["argv"], (
            f"make run ended ({make.poll()}):\n{stderr.read_text()[-4000:]}")
    finally:
        seen.set()
        driver.join()
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=60)
