"""The ssh argv parser reads options where OpenSSH reads them, and nowhere else."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebpfguard.detect.ssh_command import (
    destination_host, parse_remote_forward, parse_ssh_command, split_config_line,
)


def openssh(command_line: str):
    return parse_ssh_command("openssh", shlex.split(command_line))


def listens(command) -> list[str]:
    return [f.listen for f in command.remote_forwards]


@pytest.mark.parametrize("line", [
    "-R 8080:localhost:80 user@example.com",
    "-R8080:localhost:80 user@example.com",
    "-fNR 8080:localhost:80 user@example.com",
    "-NfR8080:localhost:80 user@example.com",
    "-NT -p 2222 -R 8080:localhost:80 example.com",
    "-i key -R 8080:localhost:80 example.com",
])
def test_remote_forward_in_every_short_option_form_is_found(line):
    command = openssh(line)
    assert listens(command) == ["8080"]
    assert command.remote_forwards[0].target == "localhost:80"
    assert command.opens_remote_forwards


def test_value_of_an_option_is_not_read_as_flags():
    # `-l R` is the user name R; `-iR` is identity file R: no forward anywhere.
    assert openssh("-l -R example.com").remote_forwards == ()
    assert openssh("-iR8080:x:80 example.com").remote_forwards == ()


@pytest.mark.parametrize("argv", [
    ["-oRemoteForward=8080 localhost:80"],
    ["-o", "RemoteForward=8080 localhost:80"],
    ["-o", "RemoteForward 8080 localhost:80"],
    ["-o", "remoteforward 8080 localhost:80"],
    ["-o", "REMOTEFORWARD = 8080 localhost:80"],
    ["-o", "RemoteForward \"8080\" localhost:80"],
    ["-No", "RemoteForward=8080 localhost:80"],
])
def test_remote_forward_option_in_forms_openssh_accepts(argv):
    command = parse_ssh_command("openssh", [*argv, "example.com"])
    assert [(f.listen, f.target, f.source) for f in command.remote_forwards] == [
        ("8080", "localhost:80", "-o RemoteForward")]


def test_remote_forward_option_with_one_argument_is_remote_dynamic():
    command = openssh("-o 'RemoteForward 1080' example.com")
    assert command.remote_forwards[0].dynamic


@pytest.mark.parametrize("spec, listen, target", [
    ("1080", "1080", None),
    ("127.0.0.1:1080", "127.0.0.1:1080", None),
    ("[::1]:1080", "[::1]:1080", None),
    ("0.0.0.0:8080:localhost:80", "0.0.0.0:8080", "localhost:80"),
    ("[::]:8080:[::1]:80", "[::]:8080", "[::1]:80"),
    ("/tmp/remote.sock:localhost:22", "/tmp/remote.sock", "localhost:22"),
    ("8080:/run/app.sock", "8080", "/run/app.sock"),
    ("/tmp/r.sock:/run/l.sock", "/tmp/r.sock", "/run/l.sock"),
    ("localhost:8080:/run/app.sock", "localhost:8080", "/run/app.sock"),
])
def test_remote_forward_shapes_split_into_listen_and_target(spec, listen, target):
    forward = parse_remote_forward(spec, "-R")
    assert (forward.listen, forward.target) == (listen, target)


def test_remote_forward_after_destination_is_found():
    command = openssh("user@example.com -N -R 8080:localhost:80")
    assert command.destination == "user@example.com"
    assert listens(command) == ["8080"]
    assert command.remote_command == ()


def test_dash_R_inside_remote_command_is_ignored():
    command = openssh("example.com sh -c 'ssh -R 9000:localhost:22 other' -R 1:x:1")
    assert command.remote_forwards == ()
    assert command.remote_command[0] == "sh"


def test_options_after_destination_stop_at_the_command():
    command = openssh("example.com -v uptime -R 8080:localhost:80")
    assert command.remote_forwards == ()
    assert command.remote_command == ("uptime", "-R", "8080:localhost:80")


def test_double_dash_before_destination_ends_option_parsing_for_good():
    command = openssh("-p 22 -- example.com -R 8080:localhost:80")
    assert command.remote_forwards == ()
    assert command.remote_command == ("-R", "8080:localhost:80")


def test_double_dash_after_destination_starts_the_command():
    command = openssh("example.com -- -R 8080:localhost:80")
    assert command.remote_forwards == ()


def test_rsync_server_flags_in_remote_command_are_not_options():
    command = openssh("-l user example.com rsync --server -vlogDtpRe.iLsfxC . /dst")
    assert command.remote_forwards == () and command.remote_command[0] == "rsync"


@pytest.mark.parametrize("line", [
    "-V -R 8080:localhost:80 example.com",
    "-G -R 8080:localhost:80 example.com",
    "-Q cipher",
    "-R 8080:localhost:80",  # no destination: ssh prints usage and exits
    "-O cancel -R 8080:localhost:80 example.com",
    "-O exit example.com",
    "-o ClearAllForwardings=yes -R 8080:localhost:80 example.com",
])
def test_commands_that_never_hold_a_forward_do_not_count(line):
    assert not openssh(line).opens_remote_forwards


def test_mux_forward_command_adds_forwards_to_the_master():
    assert openssh("-O forward -R 8080:localhost:80 example.com").opens_remote_forwards


def test_first_clear_all_forwardings_value_wins():
    command = openssh("-o ClearAllForwardings=no -o ClearAllForwardings=yes "
                      "-R 1:x:1 example.com")
    assert command.opens_remote_forwards


def test_port_comes_from_dash_p_option_or_uri():
    assert openssh("-p 2222 example.com").port == 2222
    assert openssh("-o Port=443 example.com").port == 443
    assert openssh("ssh://user@example.com:2200").port == 2200
    assert openssh("example.com").port is None


@pytest.mark.parametrize("destination, host", [
    ("example.com", "example.com"), ("user@example.com", "example.com"),
    ("a@b@example.com", "example.com"), ("ssh://user@example.com:22", "example.com"),
    ("ssh://[::1]:22", "::1"), ("user@host/2222", "host"),
])
def test_destination_host_strips_user_and_port(destination, host):
    assert destination_host(destination) == host


def test_config_file_is_taken_from_dash_F():
    assert openssh("-F /tmp/cfg example.com").config_file == "/tmp/cfg"


def test_autossh_monitor_port_value_is_not_the_destination():
    command = parse_ssh_command("autossh", shlex.split("-M 20000 -f -N -R 8080:localhost:22 "
                                                       "user@example.com"))
    assert command.destination == "user@example.com"
    assert listens(command) == ["8080"]


def test_dropbear_remote_forward_and_host_port():
    command = parse_ssh_command("dropbear", shlex.split("-N -R 8080:localhost:22 -y "
                                                        "user@example.com/2222"))
    assert listens(command) == ["8080"] and command.port == 2222


def test_plink_whole_word_options_before_and_after_the_host_then_the_command():
    # PuTTY's plink main loop (unix/uxplink.c) tests every argument for a leading `-` first:
    # options count after the host too; the next plain word starts the command.
    command = parse_ssh_command("plink", shlex.split(
        "-ssh -batch -pw secret -P 2222 -R 8080:localhost:22 user@example.com -R 1:x:1 uptime -R 2:y:2"))
    assert listens(command) == ["8080", "1"]
    assert command.port == 2222
    assert command.remote_command == ("uptime", "-R", "2:y:2")


def test_split_config_line_accepts_equals_and_whitespace():
    assert split_config_line("  RemoteForward = 8080 localhost:80 # note") == (
        "remoteforward", ["8080", "localhost:80"])
    assert split_config_line("Host=a b") == ("host", ["a", "b"])


def test_plink_saved_session_stands_for_the_host():
    command = parse_ssh_command("plink", ["-load", "office", "-R", "3389:localhost:3389", "-N"])
    assert command.opens_remote_forwards


@given(st.sampled_from(["openssh", "autossh", "dropbear", "plink"]),
       st.lists(st.one_of(st.sampled_from(["-R", "-o", "-F", "-p", "--", "-O", "-", "host"]),
                          st.text(max_size=12)), max_size=10))
def test_any_argv_parses_without_error(client, args):
    command = parse_ssh_command(client, args)
    assert all(f.source for f in command.remote_forwards)
