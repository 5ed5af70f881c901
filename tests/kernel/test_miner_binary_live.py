"""miner.binary in the live agent: a renamed program carrying miner signatures, no arguments."""

import shutil
import subprocess

import pytest
from conftest import alert_for

# A stand-in for a miner with its pool compiled in: the strings cpuminer-opt and XMRig carry
# (stratum methods and URL scheme), nothing telling in its name or argv, alive for a while.
MINER_SOURCE = r"""
#include <unistd.h>
static const char *volatile signatures[] = {
    "mining.subscribe", "mining.authorize", "mining.submit", "stratum+tcp://pool.example:3333",
};
int main(void) { sleep(3); return signatures[0][0] == 0; }
"""


@pytest.fixture(scope="module")
def miner_like(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("binary")
    source = workdir / "m.c"
    source.write_text(MINER_SOURCE)
    built = workdir / "m"
    subprocess.run(["cc", "-O0", "-o", str(built), str(source)], check=True)
    return built


def test_renamed_miner_run_without_arguments_raises_miner_binary(agent, make_cgroup, miner_like, tmp_path):
    renamed = tmp_path / "updater"
    shutil.copy(miner_like, renamed)
    cg = make_cgroup("sandbox-")
    proc = cg.popen([str(renamed)])
    try:
        alert = agent.wait_for(alert_for("miner.binary", lambda e: e["process"]["pid"] == proc.pid), timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert alert["sandbox"]["name"] == cg.path.name
    assert alert["event"]["process"]["argv"] == [str(renamed)]
    assert alert["evidence"]["yara_rules"] == ["miner_stratum_client"]
    assert alert["evidence"]["path"].endswith("/updater")


def test_the_same_binary_again_is_answered_from_the_cache_and_still_alerts(agent, make_cgroup, miner_like, tmp_path):
    renamed = tmp_path / "svc"
    shutil.copy(miner_like, renamed)
    cg = make_cgroup("sandbox-")
    pids = []
    for _ in range(2):
        proc = cg.popen([str(renamed)])
        pids.append(proc.pid)
        try:
            agent.wait_for(alert_for("miner.binary", lambda e, pid=proc.pid: e["process"]["pid"] == pid), timeout=20)
        finally:
            proc.kill()
            proc.wait()
    assert len(set(pids)) == 2


def test_a_renamed_ordinary_program_raises_no_miner_binary(agent, make_cgroup, miner_like, tmp_path):
    renamed = tmp_path / "updater"
    shutil.copy("/bin/sleep", renamed)
    cg = make_cgroup("sandbox-")
    cg.run([str(renamed), "0.2"])
    # Scans run in exec order on one worker: once a later miner's alert is out, the renamed
    # sleep's verdict is in too.
    settle = tmp_path / "settle"
    shutil.copy(miner_like, settle)
    proc = cg.popen([str(settle)])
    try:
        agent.wait_for(alert_for("miner.binary", lambda e: e["process"]["pid"] == proc.pid), timeout=20)
    finally:
        proc.kill()
        proc.wait()
    flagged = [e["evidence"]["path"] for e in agent.events() if e["kind"] == "alert"
               and e["rule"] == "miner.binary" and e["sandbox"]["cgroup"] == cg.rel]
    assert flagged == [str(settle)]


# The same miner, daemonizing as XMRig's --background does: the exec'd process forks and
# exits at once, before its exec reaches detection; the child runs on under a new session.
DAEMON_SOURCE = MINER_SOURCE.replace(
    "int main(void) { sleep(3);",
    "int main(void) { if (fork() != 0) return 0; setsid(); sleep(3);",
)


def test_a_renamed_miner_that_daemonizes_at_once_is_scanned_through_its_child(agent, make_cgroup, tmp_path):
    source = tmp_path / "d.c"
    source.write_text(DAEMON_SOURCE)
    daemon = tmp_path / "dbus-helper"
    subprocess.run(["cc", "-O0", "-o", str(daemon), str(source)], check=True)
    cg = make_cgroup("sandbox-")
    try:
        parent = cg.run([str(daemon)])  # returns at once: the child holds the image
        assert parent.returncode == 0
        alert = agent.wait_for(alert_for("miner.binary", lambda e: e.get("filename") == str(daemon)), timeout=20)
    finally:
        (cg.path / "cgroup.kill").write_text("1")
    assert alert["sandbox"]["name"] == cg.path.name
    assert alert["evidence"]["yara_rules"] == ["miner_stratum_client"]
    # Scanned through the child, the alert names it; the parent itself, when detection came
    # before its exit (unit tests pin both: test_miner_binary.py).
    assert alert["evidence"].get("daemon_pid") != alert["process"]["pid"]
