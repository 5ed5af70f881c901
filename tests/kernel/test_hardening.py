"""The agent against a sandbox that attacks it: hostile ssh configs, file tricks, exposure.

Each test reproduces the attack from a real sandbox cgroup against the real agent: probes in
the kernel, files read inside the process's root, ssh as the sandbox would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

from conftest import WALLET, RunningAgent, alert_for, has_arg, marker, miner_command_line

# A Host line of backtracking bait: `re.fullmatch` on main took 21 s on one such pattern
# against a 40-character host, and never came back with 18 stars.
HOSTILE_PATTERN = "*" * 18 + "x"
HOST = "a" * 40

# Alerts come from detection, beside the main loop: on a shared host busy with other agents'
# floods they can take a while. A bound on waiting, not a timing claim.
ALERT_TIMEOUT_S = 30

MINER_CONFIG = json.dumps({"pools": [{"url": "stratum+tcp://xmr.pool.example.org:3333", "user": WALLET}]})


def hostile_ssh_config(path: Path, lines: int = 200) -> None:
    """An ssh config that matches HOST only after hundreds of hostile patterns, then asks for
    a remote forward (so the alert shows the whole file was read and matched)."""
    path.write_text("".join(f"Host {HOSTILE_PATTERN} {'*a' * 30}*x\n  User nobody\n" for _ in range(lines))
                    + "Host *\n  RemoteForward 0 127.0.0.1:22\n")


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never speaks: ssh waits there for a
    banner, alive, as a tunnel client would be (one that exits at once could be gone before
    its files are read, a race the tests would then be about)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def ssh_argv(config: Optional[Path], token: str, port: int) -> list[str]:
    # To loopback: no DNS query; -F only when a config is given.
    return ["ssh", *(["-F", str(config)] if config else []), "-o", "HostName=127.0.0.1", "-o", "BatchMode=yes",
            "-p", str(port), "-o", f"SetEnv=T={token}", HOST]


def start_ssh(cg, config: Path, token: str, port: int) -> subprocess.Popen:
    """ssh with `config` in the sandbox; callers kill it once they are done. (OpenSSH's own
    matcher backtracks on the hostile patterns: the sandbox stalls itself.)"""
    return cg.popen(ssh_argv(config, token, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def is_exec_with(token: str):
    return lambda e: e["kind"] == "exec" and f"SetEnv=T={token}" in e["process"]["argv"]


def end(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def forward_alert_with(token: str):
    return alert_for("tunnel.ssh_remote_forward", lambda e: f"SetEnv=T={token}" in e["process"]["argv"])


def test_the_next_event_is_reported_within_a_second_after_a_hostile_ssh_config(agent, make_cgroup, tmp_path,
                                                                                silent_port):
    cg = make_cgroup("sandbox-")
    config = tmp_path / "hostile_config"
    hostile_ssh_config(config)
    token = marker()
    ssh = start_ssh(cg, config, token, silent_port)
    try:
        agent.wait_for(is_exec_with(token))
        nxt = marker()
        started = time.monotonic()
        cg.run(["/bin/true", nxt])
        agent.wait_for(has_arg(nxt), timeout=5)
        took = time.monotonic() - started
        # The hostile config was matched all the way to its last line, not given up on.
        alert = agent.wait_for(forward_alert_with(token), timeout=ALERT_TIMEOUT_S)
    finally:
        end(ssh)
    assert took < 1.0, f"the next event came after {took:.2f} s"
    assert alert["sandbox"]["name"] == cg.path.name
    assert alert["evidence"]["forwards"][0]["source"].endswith(f"hostile_config:{2 * 200 + 2}")


def test_a_sandbox_spinning_on_every_cpu_does_not_hold_up_its_miners_alert(agent, make_cgroup, tmp_path):
    """A sandbox keeping every CPU busy, as a miner does, gets no more of them than its share:
    the agent, its main loop a batch task of the default weight, still drains and detects at once."""
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    cg = make_cgroup("sandbox-")
    spinners = [cg.popen(["sh", "-c", "while :; do :; done"]) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        time.sleep(1.0)  # the spinners hold the CPUs
        token = marker()
        started = time.monotonic()
        cg.run(["sh", "-c", miner_command_line(kworker, f"-p {token}")])
        alert = agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]), timeout=ALERT_TIMEOUT_S)
        took = time.monotonic() - started
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert alert["sandbox"]["name"] == cg.path.name
    # A bound on starvation, not a latency claim (bench/alert_latency.py measures that).
    assert took < 2.0, f"the alert came {took:.2f} s after the exec"


def test_the_agents_main_loop_is_a_batch_task_and_its_other_threads_are_not(agent, make_cgroup, tmp_path):
    """The main loop waits its turn on a busy CPU; the detection worker, handed batches, and
    the rest must not: the executable scanner too, which the main loop starts at its first scan."""
    fresh = tmp_path / "helper"
    shutil.copy("/bin/sleep", fresh)  # a file never scanned: the scanner works (and starts) for it
    cg = make_cgroup("sandbox-")
    proc = cg.popen([str(fresh), "2"])
    try:
        agent.wait_for(lambda e: e["kind"] == "exec" and e["process"]["pid"] == proc.pid)
        deadline = time.monotonic() + 5
        while True:
            tids = [int(tid) for tid in os.listdir(f"/proc/{agent.proc.pid}/task")]
            others = {tid: os.sched_getscheduler(tid) for tid in tids if tid != agent.proc.pid}
            if set(others.values()) == {os.SCHED_OTHER} or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # a thread just started runs a moment with its parent's policy
    finally:
        proc.kill()
        proc.wait()
    assert len(others) >= 2  # the detection worker and the scanner at least
    assert others == {tid: os.SCHED_OTHER for tid in others}
    assert os.sched_getscheduler(agent.proc.pid) == os.SCHED_BATCH
    assert {tid: os.getpriority(os.PRIO_PROCESS, tid) for tid in tids} == {tid: 0 for tid in tids}


def test_sigterm_stops_the_agent_within_a_second_while_a_hostile_config_is_being_matched(make_cgroup, tmp_path,
                                                                                        silent_port):
    running = RunningAgent(tmp_path)
    try:
        # The most configuration one ssh command may make the agent match (Include up to the
        # byte limit), so detection is busy with it when the signal comes.
        parts = []
        for number in range(6):
            part = tmp_path / f"part{number}"
            hostile_ssh_config(part, lines=1500)
            parts.append(f"Include {part}\n")
        config = tmp_path / "config"
        config.write_text("".join(parts))
        cg = make_cgroup("sandbox-")
        token = marker()
        ssh = start_ssh(cg, config, token, silent_port)
        try:
            running.wait_for(is_exec_with(token))
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            code = running.proc.wait(timeout=30)
            took = time.monotonic() - started
        finally:
            end(ssh)
    finally:
        running.stop()
    assert code == 0, running.stderr[-4000:]
    assert took < 1.0, f"stopped after {took:.2f} s"
    assert "ebpfguard: stopped:" in running.stderr


def run_miner(agent, cg, workdir: Path, config_arg: str) -> dict:
    """Start a process that stays up like a miner with `-c config_arg`; its miner.exec alert."""
    helper = workdir / "kworker"
    helper.write_text("#!/bin/sh\nsleep 5\n")
    helper.chmod(0o755)
    token = marker()
    proc = cg.popen(["sh", "-c", f"exec ./kworker -c {config_arg} --{token}"], cwd=workdir)
    try:
        return agent.wait_for(alert_for("miner.exec", lambda e: f"--{token}" in e["process"]["argv"]),
                              timeout=ALERT_TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()


def config_sources(alert: dict) -> set[str]:
    return {hint["source"] for hint in alert["evidence"]["hints"]}


def test_a_miner_config_reached_through_a_symlink_is_read(agent, make_cgroup, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "real.json").write_text(MINER_CONFIG)
    os.symlink("real.json", workdir / "config.json")
    alert = run_miner(agent, make_cgroup("sandbox-"), workdir, "config.json")
    assert "config:config.json" in config_sources(alert)
    assert "pool_url" in {hint["hint"] for hint in alert["evidence"]["hints"]}


def test_a_miner_config_named_with_dotdot_is_read(agent, make_cgroup, tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "real.json").write_text(MINER_CONFIG)
    workdir = tmp_path / "work"
    workdir.mkdir()
    alert = run_miner(agent, make_cgroup("sandbox-"), workdir, "../conf/real.json")
    assert "config:../conf/real.json" in config_sources(alert)


def test_a_miner_config_deleted_5ms_after_start_is_read_or_reported(agent, make_cgroup, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "config.json").write_text(MINER_CONFIG)
    helper = workdir / "kworker"
    helper.write_text("#!/bin/sh\nsleep 5\n")
    helper.chmod(0o755)
    token = marker()
    cg = make_cgroup("sandbox-")
    proc = cg.popen(["sh", "-c", f"(sleep 0.005; rm config.json) & exec ./kworker -c config.json --{token}"],
                    cwd=workdir)
    try:
        alert = agent.wait_for(alert_for("miner.exec", lambda e: f"--{token}" in e["process"]["argv"]),
                              timeout=ALERT_TIMEOUT_S)
    finally:
        proc.kill()
        proc.wait()
    assert not (workdir / "config.json").exists()
    hints = {hint["hint"]: hint for hint in alert["evidence"]["hints"]}
    # Either the agent was first (the pool is in the alert) or the deletion is evidence.
    assert "pool_url" in hints or hints["config_unreadable"]["match"] == "config.json: missing"


def test_ssh_dash_F_through_a_symlink_is_read(agent, make_cgroup, tmp_path, silent_port):
    real = tmp_path / "real_config"
    real.write_text("Host *\n  RemoteForward 0 127.0.0.1:22\n")
    os.symlink(real, tmp_path / "link")
    token = marker()
    ssh = start_ssh(make_cgroup("sandbox-"), tmp_path / "link", token, silent_port)
    try:
        alert = agent.wait_for(forward_alert_with(token), timeout=ALERT_TIMEOUT_S)
    finally:
        end(ssh)
    assert alert["evidence"]["config"]["read"] == [str(tmp_path / "link")]
    assert alert["evidence"]["forwards"][0]["source"] == f"{tmp_path / 'link'}:2"


def test_the_users_ssh_config_as_a_symlink_is_read_in_the_process_mount_namespace(agent, make_cgroup, tmp_path,
                                                                                   silent_port):
    # The sandbox's own view: /root is a directory of ours only inside its mount namespace,
    # and ~/.ssh/config in it is a link. The agent must read what ssh reads there.
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (tmp_path / "real_config").write_text("Host *\n  RemoteForward 0 127.0.0.1:22\n")
    os.symlink(tmp_path / "real_config", home / ".ssh" / "config")
    token = marker()
    script = f"mount --bind {home} /root && exec {' '.join(ssh_argv(None, token, silent_port))}"
    ssh = make_cgroup("sandbox-").popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        alert = agent.wait_for(forward_alert_with(token), timeout=ALERT_TIMEOUT_S)
    finally:
        end(ssh)
    assert "/root/.ssh/config" in alert["evidence"]["config"]["read"]
    assert alert["evidence"]["forwards"][0]["source"] == "/root/.ssh/config:2"


def test_the_event_file_is_readable_by_its_owner_only(agent, make_cgroup):
    token = marker()
    make_cgroup("sandbox-").run(["/bin/true", token])
    agent.wait_for(has_arg(token))
    assert stat.S_IMODE(os.stat(agent.output).st_mode) == 0o600
