"""exec events from the real execve/execveat tracepoints."""

import base64
import json
import os
import subprocess

from conftest import has_arg, marker

from ebpfguard.kernel.events import C


def test_argv_is_exact_including_empty_strings_and_non_utf8(agent, make_cgroup):
    token = marker()
    argv = ["/bin/true", token, "", "caf\xe9", os.fsdecode(b"\xff\xferaw")]
    make_cgroup("sandbox-").run(argv, check=True)
    event = agent.wait_for(has_arg(token))
    assert event["process"]["argv"] == ["/bin/true", token, "", "caf\xe9", "\\xff\\xferaw"]
    exact = [base64.b64decode(a) for a in event["process"]["argv_b64"]]
    assert exact == [os.fsencode(a) for a in argv]
    assert event["process"]["argv_truncated"] is False
    assert event["retval"] == 0 and event["filename"] == "/bin/true"


def test_a_thousand_args_past_the_entry_bound_arrive_whole_from_the_new_image_stack(agent):
    token = marker()
    args = [f"a{i}" for i in range(998)]
    subprocess.run(["/bin/true", token] + args, check=True)
    # Short arguments: the entry probe's count bound cuts them; the exit reads the rest.
    event = agent.wait_for(has_arg(token))
    assert event["process"]["argv"] == ["/bin/true", token] + args
    assert event["process"]["argv_truncated"] is False
    assert event["argv_source"] == "stack" and event["argv_anomalies"] == ["past_entry_bounds"]


def test_an_argument_longer_than_the_entry_bound_arrives_whole(agent):
    token = marker()
    exactly = "x" * (C["ARGV_ARG_READ"] - 1)
    subprocess.run(["/bin/true", token, exactly], check=True)
    fits = agent.wait_for(has_arg(token))
    assert fits["process"]["argv"][2] == exactly and not fits["process"]["argv_truncated"]
    assert "argv_source" not in fits  # within the entry bounds: no second read
    token = marker()
    subprocess.run(["/bin/true", token, exactly + "TAIL"], check=True)
    whole = agent.wait_for(has_arg(token))
    assert whole["process"]["argv"][2] == exactly + "TAIL" and not whole["process"]["argv_truncated"]


def test_argv_past_the_stack_read_bound_is_cut_and_flagged(agent):
    token = marker()
    big = [c * (100 << 10) for c in "abc"]  # 300 KiB: each under the kernel's 128 KiB per argument
    subprocess.run(["/bin/true", token] + big, check=True)
    event = agent.wait_for(has_arg(token))
    argv = event["process"]["argv"]
    assert argv[2:4] == big[:2] and big[2].startswith(argv[4]) and len(argv[4]) < len(big[2])
    assert event["process"]["argv_truncated"] is True
    assert event["argv_anomalies"] == ["past_entry_bounds", "truncated"]


def test_failed_exec_is_reported_with_negative_errno(agent):
    token = marker()
    missing = f"/nonexistent/{token}"
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(missing, [missing, token])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    event = agent.wait_for(has_arg(token))
    assert event["retval"] == -2
    assert event["filename"] == missing
    assert event["process"]["pid"] == pid


def test_execveat_is_seen(agent):
    token = marker()
    fd = os.open("/bin/true", os.O_RDONLY)
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(fd, ["true", token], {})  # fexecve: execveat(fd, "", AT_EMPTY_PATH)
        finally:
            os._exit(1)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    event = agent.wait_for(has_arg(token))
    assert event["retval"] == 0
    # The "" the child passes lives in CPython's read-only data, a page the fork child may not
    # have mapped yet; BPF cannot fault it in, and then the kernel's own record of the mapped
    # file (/proc/<pid>/exe) stands in for the unreadable name.
    assert event["filename"] in ("", "/usr/bin/true", "/bin/true")
    # With an empty filename only /proc/<pid>/exe names the binary, and /bin/true may be gone
    # before we look: then exe is unknown and says so rather than guessing.
    exe = event["process"]["exe"]
    assert exe.endswith("/true") if exe else "exe" in event["partial"]


def test_newline_and_escape_come_out_escaped_in_one_json_line(agent):
    token = marker()
    subprocess.run(["/bin/true", token, "line1\nline2", "\x1b[2Jclear"], check=True)
    event = agent.wait_for(has_arg(token))
    assert event["process"]["argv"][2:] == ["line1\nline2", "\x1b[2Jclear"]
    raw = [line for line in agent.raw_lines() if token in line and '"kind":"exec"' in line]
    assert len(raw) == 1
    assert "\x1b" not in raw[0] and "\\u001b[2Jclear" in raw[0] and "line1\\nline2" in raw[0]
    assert json.loads(raw[0]) == event


def test_event_carries_the_cgroup_the_process_was_moved_into(agent, make_cgroup):
    token = marker()
    cg = make_cgroup("sandbox-")
    cg.run(["/bin/true", token], check=True)
    event = agent.wait_for(has_arg(token))
    assert event["sandbox"]["cgroup"] == cg.rel
    assert event["sandbox"]["cgroup_id"] == os.stat(cg.path).st_ino
    assert event["process"]["comm"] == "true" and event["process"]["uid"] == 0


def test_arguments_past_the_byte_bound_arrive_whole(agent):
    token = marker()
    long_args = [f"{i}" * 3000 for i in range(10)]  # 30 KB: past the 16 KiB entry buffer
    subprocess.run(["/bin/true", token] + long_args, check=True)
    event = agent.wait_for(has_arg(token))
    assert event["process"]["argv"] == ["/bin/true", token] + long_args
    assert event["process"]["argv_truncated"] is False and event["argv_source"] == "stack"


FORK_EXEC = r"""
#include <unistd.h>
#include <sys/wait.h>
int main(void) {
    /* argv strings are literals the child never touches before execl: BPF cannot fault
       those pages in, so the exec probe cannot read them. */
    pid_t p = fork();
    if (p == 0) {
        execl(LAUNCHED, "kworker", "-o", "stratum+tcp://pool.example.net:3333", "--donate-level", "1", (char *)0);
        _exit(127);
    }
    waitpid(p, 0, 0);
    return 0;
}
"""


def test_argv_the_entry_probe_cannot_read_is_read_from_the_new_image_stack_and_still_alerts(agent, make_cgroup, tmp_path):
    launched = tmp_path / "kworker"
    launched.write_text("#!/bin/sh\nsleep 2\n")  # lives long enough, like a miner
    launched.chmod(0o755)
    source, binary = tmp_path / "fork_exec.c", tmp_path / "fork_exec"
    source.write_text(FORK_EXEC)
    subprocess.run(["cc", "-O2", f'-DLAUNCHED="{launched}"', "-o", str(binary), str(source)], check=True)
    cg = make_cgroup("sandbox-")
    cg.run([str(binary)], check=True)
    event = agent.wait_for(lambda e: e["kind"] == "exec" and e["sandbox"]["cgroup"] == cg.rel
                           and e["process"]["pid"] != 0 and str(launched) in e["process"]["argv"])
    assert event["argv_source"] == "stack" and event["argv_anomalies"] == ["unreadable_at_entry"]
    assert event["process"]["argv"][-4:] == ["-o", "stratum+tcp://pool.example.net:3333", "--donate-level", "1"]
    alert = agent.wait_for(lambda e: e["kind"] == "alert" and e["rule"] == "miner.exec"
                           and e["sandbox"]["cgroup"] == cg.rel)
    assert alert["event"]["process"]["pid"] == event["process"]["pid"]
