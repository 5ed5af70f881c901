"""Detections in the live agent, from real processes in real sandbox cgroups."""

import json
import shutil
import subprocess

from conftest import WALLET, alert_for, has_arg, marker, miner_command_line



def test_renamed_sleep_with_miner_arguments_raises_one_miner_exec_alert(agent, make_cgroup, tmp_path):
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    cg = make_cgroup("sandbox-")
    token = marker()
    # sleep rejects these arguments and exits: the exec itself is what gets flagged.
    cg.run(["sh", "-c", miner_command_line(kworker, f"-p {token}")])
    alert = agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]))
    assert alert["sandbox"]["name"] == cg.path.name
    assert alert["severity"] in ("high", "critical")
    ancestry = alert["event"]["process"]["ancestry"]
    assert ancestry and ancestry[0]["comm"] == "sh"
    others = [e for e in agent.events() if e["kind"] == "alert" and e["rule"] == "miner.exec"
              and token in e["event"]["process"]["argv"]]
    assert len(others) == 1


def test_miner_started_with_only_a_config_file_is_caught_from_the_file(agent, make_cgroup, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({
        "autosave": True,
        "pools": [{"url": "stratum+tcp://xmr.pool.example.org:3333", "user": WALLET, "pass": "x"}],
    }))
    binary = workdir / "helper"
    # Stays alive whatever its arguments, while the agent reads its config (as a miner would).
    binary.write_text("#!/bin/sh\nsleep 5\n")
    binary.chmod(0o755)
    cg = make_cgroup("sandbox-")
    token = marker()
    proc = cg.popen(["sh", "-c", f'exec ./helper -c config.json --{token}'], cwd=workdir)
    try:
        alert = agent.wait_for(alert_for("miner.exec", lambda e: f"--{token}" in e["process"]["argv"]))
    finally:
        proc.kill()
        proc.wait()
    assert alert["sandbox"]["name"] == cg.path.name
    assert "config.json" in json.dumps(alert["evidence"])


def test_benign_process_in_a_sandbox_raises_no_alert(agent, make_cgroup):
    token = marker()
    cg = make_cgroup("sandbox-")
    cg.run(["sh", "-c", f"echo {token} | grep -c stratum"], capture_output=True)
    agent.wait_for(lambda e: e["kind"] == "exec" and token in " ".join(e["process"]["argv"]))
    later = marker()
    cg.run(["/bin/true", later])
    agent.wait_for(has_arg(later))
    assert not [e for e in agent.events() if e["kind"] == "alert" and e["sandbox"]["cgroup"] == cg.rel]


def test_bash_base64_miner_launch_is_flagged(agent, make_cgroup):
    import base64

    token = marker()
    script = miner_command_line(f"/tmp/{token}")
    encoded = base64.b64encode(script.encode()).decode()
    cg = make_cgroup("sandbox-")
    cg.run(["bash", "-c", f"echo {encoded} | base64 -d | bash"], capture_output=True)
    alert = agent.wait_for(alert_for("miner.exec", lambda e: encoded in " ".join(e["process"]["argv"])))
    assert alert["sandbox"]["name"] == cg.path.name


def test_sandboxed_connect_to_metadata_address_raises_egress_internal(agent, make_cgroup):
    from netns import enter, isolated_netns
    from test_net_events import connect_from

    cg = make_cgroup("sandbox-")
    with isolated_netns("169.254.169.254/32") as ns:
        pid, _ = connect_from(cg, "4", "169.254.169.254", 80, preexec=lambda: enter(ns))
    alert = agent.wait_for(alert_for("egress.internal", lambda e: e["process"]["pid"] == pid))
    assert alert["severity"] == "critical" and alert["evidence"]["category"] == "metadata"
    assert alert["sandbox"]["name"] == cg.path.name


def test_allowlisted_destination_raises_no_egress_alert(agent, make_cgroup):
    from netns import enter, isolated_netns
    from test_net_events import connect_from

    cg = make_cgroup("sandbox-allowed-")
    with isolated_netns("169.254.169.254/32") as ns:
        pid, _ = connect_from(cg, "4", "169.254.169.254", 80, preexec=lambda: enter(ns))
    agent.wait_for(lambda e: e["kind"] == "connect" and e["process"]["pid"] == pid)
    token = marker()
    subprocess.run(["/bin/true", token])
    agent.wait_for(has_arg(token))  # the agent has moved past the connect
    # (Its setns into the test's namespace is a sandbox.escape, rightly: not what this checks.)
    assert not [e for e in agent.events() if e["kind"] == "alert" and e["rule"] == "egress.internal"
                and e["event"]["process"]["pid"] == pid]
