"""tunnel.ssh_remote_forward: one alert at exec, one more with the destination on connect."""

from __future__ import annotations

import shlex
from typing import Optional

from shipped_rules import context_for

from ebpfguard.detect.filereader import ReadResult
from ebpfguard.detect.tunnel_ssh import SshRemoteForward


def exec_event(command_line: str, pid: Optional[int] = None, filename: Optional[str] = None,
               **extra) -> dict:
    argv = shlex.split(command_line)
    process = {"pid": pid, "uid": 1000, "argv": argv} if pid is not None else {}
    return {"kind": "exec", "argv": argv, "filename": filename or f"/usr/bin/{argv[0]}",
            "process": process, **extra}


def connect_event(pid: int, daddr: str, dport: int) -> dict:
    return {"kind": "connect", "daddr": daddr, "dport": dport, "process": {"pid": pid}}


def reading(files: dict[str, bytes]):
    """A detector's file reader over an in-memory file system."""
    return lambda event, path: ReadResult(files[path]) if path in files else ReadResult(None, "missing")


def detector(read_file=None) -> SshRemoteForward:
    return SshRemoteForward(context_for("tunnel.ssh_remote_forward", read_file=read_file))


def test_exec_with_remote_forward_alerts_at_once_with_its_forwards():
    [finding] = detector().on_event(exec_event("ssh -fNR 8080:localhost:80 user@example.com"))
    assert finding.evidence["client"] == "openssh"
    assert finding.evidence["host"] == "user@example.com"
    assert finding.evidence["forwards"] == [{"listen": "8080", "target": "localhost:80",
                                             "dynamic": False, "source": "-R",
                                             "text": "8080:localhost:80"}]
    assert "config" not in finding.evidence  # replay: no files read


def test_first_connect_of_the_flagged_process_adds_the_destination():
    rule = detector()
    list(rule.on_event(exec_event("ssh -N -R 0:127.0.0.1:22 -p 2222 example.com", pid=42)))
    assert list(rule.on_event(connect_event(42, "127.0.0.53", 53))) == []  # the resolver
    assert list(rule.on_event(connect_event(42, "203.0.113.7", 2222)))[0].evidence[
        "destination"] == {"daddr": "203.0.113.7", "dport": 2222}
    assert list(rule.on_event(connect_event(42, "203.0.113.7", 2222))) == []  # once only


def test_connect_of_another_process_is_not_enriched():
    rule = detector()
    list(rule.on_event(exec_event("ssh -R 1080 example.com", pid=42)))
    assert list(rule.on_event(connect_event(43, "203.0.113.7", 22))) == []


def test_pid_reused_after_exit_is_forgotten():
    rule = detector()
    list(rule.on_event(exec_event("ssh -R 1080 example.com", pid=42)))
    list(rule.on_event({"kind": "exit", "process": {"pid": 42}, "exit_code": 255}))
    assert list(rule.on_event(connect_event(42, "203.0.113.7", 22))) == []


def test_flagged_pids_are_bounded():
    rule = SshRemoteForward(context_for("tunnel.ssh_remote_forward", max_tracked_processes=2))
    for pid in (1, 2, 3):
        list(rule.on_event(exec_event("ssh -R 1080 example.com", pid=pid)))
    assert list(rule.flagged) == [2, 3]


def test_sshd_re_exec_with_dash_R_is_not_a_tunnel():
    assert list(detector().on_event(exec_event("/usr/sbin/sshd -D -R",
                                               filename="/usr/sbin/sshd"))) == []


def test_scp_dash_R_is_not_a_tunnel():
    assert list(detector().on_event(exec_event("scp -R a:/x b:/y"))) == []


def test_failed_exec_of_a_path_search_is_not_counted():
    event = exec_event("ssh -R 1080 example.com", filename="/usr/local/bin/ssh", retval=-2)
    assert list(detector().on_event(event)) == []


def test_program_is_known_by_filename_not_by_argv0():
    event = exec_event("bash -R 1080 example.com", filename="/usr/bin/ssh")
    assert len(list(detector().on_event(event))) == 1


def test_live_agent_finds_forward_in_the_users_config():
    files = {"/etc/passwd": b"agent:x:1000:1000::/home/agent:/bin/sh\n",
             "/home/agent/.ssh/config": b"Host tunnel\n  RemoteForward 8080 localhost:22\n"}
    [finding] = detector(reading(files)).on_event(
        exec_event("ssh -N tunnel", pid=7))
    assert finding.evidence["forwards"][0]["source"] == "/home/agent/.ssh/config:2"
    assert finding.evidence["config"]["read"] == ["/home/agent/.ssh/config"]
    assert finding.evidence["config"]["unreadable"] == ["/etc/ssh/ssh_config (missing)"]


def test_config_clear_all_forwardings_cancels_the_alert():
    files = {"/tmp/c": b"ClearAllForwardings yes\n"}
    findings = detector(reading(files)).on_event(
        exec_event("ssh -F /tmp/c -R 1:x:1 example.com"))
    assert list(findings) == []


def test_autossh_alerts_but_leaves_the_connect_to_its_ssh_child():
    rule = detector()
    assert len(list(rule.on_event(exec_event("autossh -M 0 -N -R 2222:localhost:22 h",
                                             pid=5)))) == 1
    assert 5 not in rule.flagged


def test_a_renamed_openssh_client_is_known_by_its_forward_grammar():
    from shipped_rules import context_for
    from ebpfguard.detect.tunnel_ssh import SshRemoteForward
    rule = SshRemoteForward(context_for("tunnel.ssh_remote_forward"))
    event = {"kind": "exec", "filename": "/tmp/.cache/updater",
             "argv": ["updater", "-N", "-R", "0:127.0.0.1:22", "user@203.0.113.9"]}
    [finding] = rule.on_event(event)
    assert finding.evidence["client"] == "openssh" and finding.evidence["program"] == "updater"
    for look_alike in (["chmod", "-R", "755", "/data"], ["chown", "-R", "1000:1000", "/data"],
                       ["./x", "-N", "-L", "5432:db:5432", "user@203.0.113.9"], ["ssh-keygen", "-R", "host"]):
        assert list(rule.on_event({"kind": "exec", "argv": look_alike})) == []


def test_sshpass_and_sh_c_hand_their_ssh_command_to_the_parser():
    from shipped_rules import context_for
    from ebpfguard.detect.tunnel_ssh import SshRemoteForward
    rule = SshRemoteForward(context_for("tunnel.ssh_remote_forward"))
    wrapped = {"kind": "exec", "argv": ["sshpass", "-p", "pw", "ssh", "-R", "9000:localhost:22", "root@203.0.113.30"]}
    [finding] = rule.on_event(wrapped)
    assert finding.evidence["program"] == "ssh" and finding.evidence["host"] == "root@203.0.113.30"
    script = {"kind": "exec", "argv": ["sh", "-c", "ssh -o StrictHostKeyChecking=no -R 80:localhost:8080 serveo.net"]}
    assert [f.evidence["host"] for f in rule.on_event(script)] == ["serveo.net"]
    assert list(rule.on_event({"kind": "exec", "argv": ["sshpass", "-p", "pw", "ssh", "user@h", "uptime"]})) == []
