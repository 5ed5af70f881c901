"""Command lines as launched: wrappers, shell scripts and base64 payloads."""

from __future__ import annotations

import base64

from ebpfguard.detect.cmdline import commands_of, program_name, shell_script, split_script, unwrap


def test_wrappers_and_their_options_are_peeled():
    assert unwrap(["timeout", "-s", "KILL", "10m", "taskset", "-c", "0-3", "env", "A=b", "./x", "-a"]) == (
        ("./x", "-a"), ("timeout", "taskset", "env"))


def test_shell_script_is_found_after_clustered_flags():
    assert shell_script(["/bin/bash", "-lc", "echo hi", "arg0"]) == "echo hi"
    assert shell_script(["sh", "script.sh"]) is None
    assert shell_script(["su", "-", "app", "-c", "id"]) == "id"


def test_script_is_split_into_simple_commands_without_redirections():
    assert split_script("cd /tmp && ./x -o h:1 >/dev/null 2>&1 &\necho done; a | b") == [
        ("cd", "/tmp"), ("./x", "-o", "h:1", "2"), ("echo", "done"), ("a",), ("b",)]


def test_unbalanced_quotes_still_yield_words():
    assert split_script("./x -o 'h:1") == [("./x", "-o", "'h:1")]


def test_base64_layers_are_followed():
    inner = base64.b64encode(b"./miner -o h:1").decode()
    outer = base64.b64encode(f"echo {inner} | base64 -d | sh".encode()).decode()
    commands = list(commands_of(["bash", "-c", f"echo {outer}|base64 -d|bash"]))
    assert ("./miner", "-o", "h:1") in [command.argv for command in commands]


def test_program_name():
    assert program_name("/tmp/X/XMRig.exe") == "xmrig"
