"""For sandbox runners: `ebpfguard report` and the client, against a live agent's history.

One agent serves the module, with its control socket in a directory other users can
traverse and a grant for the `nobody` user on `sandbox-runner-*` only, so the refusals are
real refusals by SO_PEERCRED.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import RunningAgent, alert_for, marker, miner_command_line
from sshd import start_sshd

from ebpfguard import client

NOBODY = pwd.getpwnam("nobody").pw_uid
EXITED_WAIT_S = 60.0


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runner_agent(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runner-agent")
    control_dir = Path(tempfile.mkdtemp(prefix="ebpfguard-control-"))
    control_dir.chmod(0o711)
    config = workdir / "config.yaml"
    config.write_text(f"clients:\n  allow:\n    - {{uid: {NOBODY}, sandboxes: [\"sandbox-runner-*\"]}}\n")
    agent = RunningAgent(workdir, ("--config", str(config), "--control-socket", str(control_dir / "run" / "control.sock")))
    agent.control = str(control_dir / "run" / "control.sock")
    yield agent
    agent.stop()
    shutil.rmtree(control_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def exited_sandbox(runner_agent, cgroup_root):
    """A sandbox that ran only `ls` and whose processes all exited, at the module's start;
    its report is asked for at the end, once a minute has passed."""
    from conftest import Cgroup

    cg = Cgroup(cgroup_root / f"sandbox-{marker()[-12:]}", cgroup_root)
    token = marker()
    cg.run(["ls", "/", f"--hide={token}"], stdout=subprocess.DEVNULL)
    runner_agent.wait_for(lambda e: e["kind"] == "exit" and f"--hide={token}" in e["process"]["argv"])
    yield cg, time.monotonic()
    cg.remove()


def report(agent, sandbox, *args):
    return subprocess.run([sys.executable, "-m", "ebpfguard", "report", sandbox, "--control-socket", agent.control,
                           *args], capture_output=True, text=True, timeout=30)


def raw_request_as(uid, path, request):
    """A request from another user, with the system's Python and nothing of ours imported:
    what the agent answers (or '' when it closes the connection without a word)."""
    line = json.dumps(request).encode() + b"\n"
    code = ("import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "s.settimeout(10)\n"
            f"s.connect({path!r})\n"
            "try:\n"
            f"    s.sendall({line!r})\n"
            "except BrokenPipeError:\n"  # refused: closed before the request went
            "    pass\n"
            "data = b''\n"
            "while not data.endswith(b'\\n'):\n"
            "    try:\n"
            "        chunk = s.recv(65536)\n"
            "    except ConnectionResetError:\n"
            "        break\n"
            "    if not chunk: break\n"
            "    data += chunk\n"
            "sys.stdout.write(data.decode())\n")
    done = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3", "-c", code],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_sandbox_with_a_renamed_miner_and_ssh_R_is_flagged_with_both_rules(runner_agent, exited_sandbox,
                                                                              make_cgroup, sshd, tmp_path):
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    cg = make_cgroup("sandbox-")
    script = (f"{miner_command_line(kworker)}; "
              f"exec ssh -N -R 0:127.0.0.1:22 {' '.join(sshd.client_args())} root@127.0.0.1")
    shell = cg.popen(["sh", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        runner_agent.wait_for(alert_for("tunnel.ssh_remote_forward", lambda e: e["process"]["pid"] == shell.pid))
        runner_agent.wait_for(lambda e: e["kind"] == "connect" and e["sandbox"]["name"] == cg.path.name
                              and e["dport"] == sshd.port)
        done = report(runner_agent, cg.path.name, "--format", "json")
    finally:
        shell.kill()
        shell.wait()
    assert done.returncode == 1, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["verdict"] == "flagged"
    assert {"miner.exec", "tunnel.ssh_remote_forward"} <= {r["rule"] for r in verdict["rules"]}
    by_pid = {p["pid"]: p for p in verdict["processes"]}
    miner = next(p for p in verdict["processes"] if p["argv"] and p["argv"][0] == str(kworker))
    shell_images = by_pid[miner["ppid"]]["images"]  # the shell that started it, then exec'd ssh
    assert shell_images[0]["argv"][:2] == ["sh", "-c"] and shell_images[-1]["argv"][0] == "ssh"
    assert any(c["daddr"] == "127.0.0.1" and c["dport"] == sshd.port for c in verdict["connections"])
    text = report(runner_agent, cg.path.name)
    assert text.returncode == 1 and "FLAGGED" in text.stdout and "tunnel.ssh_remote_forward" in text.stdout


def test_a_sandbox_that_ran_only_ls_is_clean_and_an_unknown_one_exits_2(runner_agent, exited_sandbox):
    cg, _ = exited_sandbox
    done = report(runner_agent, cg.path.name, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "clean"
    unknown = report(runner_agent, f"sandbox-{marker()}")
    assert unknown.returncode == 2 and "no history" in unknown.stderr


def first_seen_in_file(path: Path, token: str, seen: dict, stop: threading.Event) -> None:
    """Poll the agent's output file every millisecond; note when `token` first appears. Once
    `stop` is set the file is read one last time (the test may stop it the moment it saw the
    line itself, while this poller slept)."""
    offset = 0
    while "at" not in seen:
        stopping = stop.is_set()
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
        if token.encode() in chunk:
            seen["at"] = time.monotonic()
        offset += max(0, chunk.rfind(b"\n") + 1)
        if stopping:
            return
        time.sleep(0.001)


def test_watch_gets_the_sandboxs_alert_at_once_and_nothing_of_others(runner_agent, make_cgroup, tmp_path):
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    watched, other = make_cgroup("sandbox-runner-"), make_cgroup("sandbox-runner-")
    token, seen, stop = marker(), {}, threading.Event()
    poller = threading.Thread(target=first_seen_in_file, args=(runner_agent.output, token, seen, stop))
    stream = client.watch(watched.path.name, runner_agent.control, timeout_s=20)
    poller.start()
    try:
        other.run(["sh", "-c", miner_command_line(kworker, f"-p {marker()}")])
        watched.run(["sh", "-c", miner_command_line(kworker, f"-p {token}")])
        alert = next(stream)
        received = time.monotonic()
        runner_agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]))
    finally:
        stream.close()
        stop.set()
        poller.join()
    assert alert["kind"] == "alert" and alert["sandbox"]["name"] == watched.path.name
    assert token in " ".join(alert["event"]["process"]["argv"])  # the first thing it got: nothing of `other`
    # Sent in the same loop turn as the line is written: no later than the file shows it, give
    # or take the poller's millisecond (negative when the stream is first, as it usually is).
    assert received - seen["at"] < 0.1


def test_a_uid_the_config_does_not_name_is_refused_and_a_granted_one_only_for_its_sandboxes(runner_agent, exited_sandbox):
    cg, _ = exited_sandbox
    outsider = raw_request_as(NOBODY + 1 if NOBODY + 1 != 0 else 12345, runner_agent.control,
                              {"op": "report", "args": {"sandbox": cg.path.name}})
    assert outsider == ""  # closed without a word
    runner = json.loads(raw_request_as(NOBODY, runner_agent.control, {"op": "report", "args": {"sandbox": cg.path.name}}))
    assert runner["ok"] is False and runner["code"] == "forbidden"  # not one of its sandbox-runner-*
    actions = json.loads(raw_request_as(NOBODY, runner_agent.control, {"op": "actions.list"}))
    assert actions["code"] == "forbidden"


def test_a_process_inside_a_sandbox_is_refused_even_as_root(runner_agent, make_cgroup):
    cg = make_cgroup("sandbox-runner-")
    done = cg.run([sys.executable, "-c",
                   f"from ebpfguard import client\ntry:\n    client.call('sandboxes', path={runner_agent.control!r})\n"
                   "except client.Refused as e:\n    print('refused:', e)\n"], capture_output=True, text=True)
    assert done.stdout.startswith("refused:"), done.stdout + done.stderr


def test_the_report_still_answers_a_minute_after_the_sandbox_exited(runner_agent, exited_sandbox):
    cg, exited_at = exited_sandbox
    time.sleep(max(0.0, EXITED_WAIT_S - (time.monotonic() - exited_at)))
    done = report(runner_agent, cg.path.name, "--format", "json")
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["verdict"] == "clean" and verdict["live_processes"] == 0
    assert any(p["argv"][:1] == ["ls"] for p in verdict["processes"])
