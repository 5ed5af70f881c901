"""Config files: the RemoteForward lines ssh would apply to the destination, read best effort."""

from __future__ import annotations

import shlex

from ebpfguard.detect.filereader import ReadResult
from ebpfguard.detect.ssh_command import parse_ssh_command
from ebpfguard.detect.ssh_config import home_directory, host_matches, read_remote_forwards

HOME = "/home/agent"


def reader(files: dict[str, str]):
    return lambda path: ReadResult(files[path].encode()) if path in files else ReadResult(None, "missing")


def forwards_for(command_line: str, files: dict[str, str]):
    command = parse_ssh_command("openssh", shlex.split(command_line))
    return read_remote_forwards(command, reader(files), HOME)


def test_remote_forward_in_matching_host_block_is_found():
    result = forwards_for("tunnel", {f"{HOME}/.ssh/config": (
        "Host other\n  RemoteForward 1 x:1\n"
        "Host tun*\n  HostName example.com\n  RemoteForward 8080 localhost:22\n")})
    assert [(f.listen, f.target, f.source) for f in result.forwards] == [
        ("8080", "localhost:22", f"{HOME}/.ssh/config:5")]
    assert result.read == [f"{HOME}/.ssh/config"]
    assert result.unreadable == ["/etc/ssh/ssh_config (missing)"]


def test_lines_before_any_host_apply_to_every_host():
    result = forwards_for("anything", {"/etc/ssh/ssh_config": "RemoteForward 9000\n"})
    assert result.forwards[0].dynamic


def test_dash_F_replaces_the_default_files():
    files = {"/tmp/cfg": "Host *\n RemoteForward=2222 127.0.0.1:22\n",
             f"{HOME}/.ssh/config": "RemoteForward 1 x:1\n"}
    result = forwards_for("-F /tmp/cfg example.com", files)
    assert [f.listen for f in result.forwards] == ["2222"]
    assert result.read == ["/tmp/cfg"]


def test_dash_F_none_reads_nothing():
    result = forwards_for("-F none example.com", {"/etc/ssh/ssh_config": "RemoteForward 1\n"})
    assert result.forwards == [] and result.read == []


def test_include_is_followed_relative_to_dot_ssh():
    files = {f"{HOME}/.ssh/config": "Include extra.conf\n",
             f"{HOME}/.ssh/extra.conf": "Host example.com\n RemoteForward 7000 localhost:7000\n"}
    result = forwards_for("example.com", files)
    assert [f.source for f in result.forwards] == [f"{HOME}/.ssh/extra.conf:2"]


def test_include_inside_a_non_matching_host_block_is_not_followed():
    files = {f"{HOME}/.ssh/config": "Host elsewhere\n Include extra.conf\n",
             f"{HOME}/.ssh/extra.conf": "RemoteForward 7000 localhost:7000\n"}
    assert forwards_for("example.com", files).forwards == []


def test_include_loops_stop_at_the_depth_limit():
    files = {f"{HOME}/.ssh/config": "Include config\n"}
    result = forwards_for("example.com", files)
    assert len(result.read) + len(result.unreadable) <= 32
    assert result.forwards == []


def test_glob_includes_are_reported_not_guessed():
    result = forwards_for("example.com", {"/etc/ssh/ssh_config":
                                          "Include /etc/ssh/ssh_config.d/*.conf\n"})
    assert result.unresolved_includes == ["/etc/ssh/ssh_config.d/*.conf"]


def test_match_blocks_are_skipped_and_counted():
    result = forwards_for("example.com", {f"{HOME}/.ssh/config":
                                          "Match exec true\n RemoteForward 1 x:1\n"})
    assert result.forwards == [] and result.skipped_match_blocks == 1


def test_clear_all_forwardings_in_config_is_reported():
    result = forwards_for("example.com", {"/etc/ssh/ssh_config": "ClearAllForwardings yes\n"})
    assert result.clear_all_forwardings is True


def test_host_patterns_follow_openssh_negation_and_wildcards():
    assert host_matches(["*.example.com", "!bastion.example.com"], "db.EXAMPLE.com")
    assert not host_matches(["*.example.com", "!bastion.example.com"], "bastion.example.com")
    assert host_matches(["db?"], "db1") and not host_matches(["db?"], "db10")
    assert not host_matches(["!x"], "y")  # only negations: nothing matches


def test_home_directory_comes_from_passwd():
    passwd = b"root:x:0:0:root:/root:/bin/bash\nagent:x:1000:1000::/home/agent:/bin/sh\n"
    assert home_directory(passwd, 1000) == "/home/agent"
    assert home_directory(passwd, 42) is None
    assert home_directory(None, 0) is None
