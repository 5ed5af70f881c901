"""Reverse SSH tunnels from a sandbox, against a real sshd on loopback."""

import subprocess

import pytest
from conftest import alert_for, marker
from sshd import free_port, start_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def forwarded(proc, sshd):
    return alert_for("tunnel.ssh_remote_forward", lambda e: e["process"]["pid"] == proc.pid)


def run_tunnel(cg, argv):
    """Start a tunnel client in the sandbox; it stays up until the test ends it."""
    return cg.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc):
    proc.terminate()
    proc.wait(timeout=10)


def test_ssh_dash_R_from_a_sandbox_is_one_alert_with_sandbox_and_destination(agent, make_cgroup, sshd):
    cg = make_cgroup("sandbox-")
    proc = run_tunnel(cg, ["ssh", "-N", "-R", "0:127.0.0.1:22", *sshd.client_args(), "root@127.0.0.1"])
    try:
        at_exec = agent.wait_for(forwarded(proc, sshd))
        with_destination = agent.wait_for(
            lambda e: forwarded(proc, sshd)(e) and "destination" in e["evidence"])
    finally:
        stop(proc)
    assert at_exec["sandbox"]["name"] == cg.path.name
    assert with_destination["evidence"]["destination"] == {"daddr": "127.0.0.1", "dport": sshd.port}
    assert with_destination["sandbox"]["name"] == cg.path.name
    at_exec_alerts = [e for e in agent.events() if forwarded(proc, sshd)(e) and "destination" not in e["evidence"]]
    assert len(at_exec_alerts) == 1


def test_remote_forward_only_in_a_dash_F_config_file_is_found(agent, make_cgroup, sshd, tmp_path):
    host_alias = marker()
    config = tmp_path / "ssh_config"
    config.write_text(f"Host {host_alias}\n  HostName 127.0.0.1\n  User root\n  RemoteForward 0 127.0.0.1:22\n")
    cg = make_cgroup("sandbox-")
    proc = run_tunnel(cg, ["ssh", "-F", str(config), "-N", *sshd.client_args(), host_alias])
    try:
        alert = agent.wait_for(forwarded(proc, sshd))
    finally:
        stop(proc)
    assert alert["sandbox"]["name"] == cg.path.name
    assert str(config) in str(alert["evidence"])


def test_sshd_re_exec_and_local_forwards_raise_no_tunnel_alert(agent, make_cgroup, sshd):
    cg = make_cgroup("sandbox-")
    token = marker()
    proc = subprocess.run(["ssh", "-L", f"{free_port()}:127.0.0.1:22", *sshd.client_args(), "root@127.0.0.1", "/bin/echo", token],
                          preexec_fn=cg.enter, capture_output=True, text=True, timeout=30)
    assert token in proc.stdout, proc.stderr
    # sshd ran the remote command: its session re-exec and the command have both been seen
    agent.wait_for(lambda e: e["kind"] == "exec" and e["process"]["argv"] == ["/bin/echo", token])
    tunnel_alerts = [e for e in agent.events() if e["kind"] == "alert" and e["rule"].startswith("tunnel.")
                     and (e["sandbox"]["cgroup"] == cg.rel or e["event"]["process"]["comm"] == "sshd")]
    assert tunnel_alerts == []
