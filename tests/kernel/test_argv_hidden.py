"""argv built to hide a miner from the exec probe (issue 16): padded past the entry bounds, or
placed in pages the kernel has not faulted in by a launcher whose new program rewrites its own
argv at once. Each is seen in full (read from the new image's stack at execve's exit) and
scored as a signal of its own."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import WALLET, alert_for

POOL = "stratum+tcp://pool.example.net:3333"
MINER_TAIL = ["-o", POOL, "-u", WALLET]

# Writes its arguments to a file, maps the file without touching the mapping, and execs
# TARGET with argv pointing into it: the entry probe cannot read pages not faulted in.
LAUNCHER = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    size_t size = 0;
    for (int i = 2; i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        if (write(fd, argv[i], n) != (ssize_t)n) return 2;
        size += n;
    }
    char *mapped = mmap(0, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) return 3;
    char **args = calloc(argc, sizeof(char *));
    size_t at = 0;
    for (int i = 2; i < argc; i++) {
        args[i - 2] = mapped + at;  /* pointer arithmetic only: the page stays untouched */
        at += strlen(argv[i]) + 1;
    }
    execv(TARGET, args);
    return 127;
}
"""

# The program launched: before anything else, rewrites its argv so that /proc/<pid>/cmdline
# reads like a kernel thread, then lives on like a miner.
REWRITER = r"""
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char *end = argv[argc - 1] + strlen(argv[argc - 1]);
    memset(argv[0], 0, end - argv[0]);
    strcpy(argv[0], "[kworker/0:1]");
    sleep(3);
    return 0;
}
"""


@pytest.fixture(scope="module")
def launcher(tmp_path_factory) -> tuple[Path, Path]:
    """(the launcher, the self-rewriting program it runs), compiled once."""
    tmp = tmp_path_factory.mktemp("argv")
    rewriter = tmp / "worker"
    (tmp / "rewriter.c").write_text(REWRITER)
    subprocess.run(["cc", "-O2", "-o", str(rewriter), str(tmp / "rewriter.c")], check=True)
    (tmp / "launcher.c").write_text(LAUNCHER)
    launcher = tmp / "launcher"
    subprocess.run(["cc", "-O2", f'-DTARGET="{rewriter}"', "-o", str(launcher), str(tmp / "launcher.c")], check=True)
    return launcher, rewriter


def miner_alert(agent, cg, program: str = "/bin/true"):
    return agent.wait_for(alert_for("miner.exec", lambda e: e["sandbox"]["cgroup"] == cg.rel
                                    and e["process"]["argv"][:1] == [program]))


def hints(alert) -> dict:
    return {hint["hint"]: hint["match"] for hint in alert["evidence"]["hints"]}


def test_seventy_junk_arguments_before_the_pool_hide_nothing(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    argv = ["/bin/true", *([""] * 35), *(["AAAA"] * 35), *MINER_TAIL]
    cg.run(argv, check=True)
    alert = miner_alert(agent, cg)
    event = alert["event"]
    assert event["process"]["argv"] == argv and event["process"]["argv_truncated"] is False
    assert event["argv_source"] == "stack" and event["argv_anomalies"] == ["past_entry_bounds"]
    found = hints(alert)
    assert found["pool_url"] == POOL and found["wallet"] == WALLET
    assert found["argv_hidden"] == "past_entry_bounds" and found["argv_padded"] == "69 empty or repeated arguments"


def test_four_arguments_of_4090_bytes_before_the_pool_hide_nothing(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    argv = ["/bin/true", *(c * 4090 for c in "wxyz"), *MINER_TAIL]
    cg.run(argv, check=True)
    alert = miner_alert(agent, cg)
    assert alert["event"]["process"]["argv"] == argv
    assert alert["event"]["argv_anomalies"] == ["past_entry_bounds"]
    assert {"pool_url", "wallet", "argv_hidden"} <= set(hints(alert))


def test_argv_in_untouched_pages_rewritten_by_the_new_program_is_seen_as_it_was_received(
        agent, make_cgroup, launcher, tmp_path):
    launch, rewriter = launcher
    cg = make_cgroup("sandbox-")
    argv = [str(rewriter), *MINER_TAIL, "--donate-level", "1"]
    proc = cg.popen([str(launch), str(tmp_path / "args"), *argv])
    try:
        alert = miner_alert(agent, cg, str(rewriter))
        event = alert["event"]
        assert event["process"]["argv"] == argv
        assert event["argv_source"] == "stack" and event["argv_anomalies"] == ["unreadable_at_entry"]
        assert {"pool_url", "wallet", "donate", "argv_hidden"} <= set(hints(alert))
        # What the old /proc fallback would have read by now: the program's own rewrite.
        cmdline = Path(f"/proc/{event['process']['pid']}/cmdline").read_bytes()
        assert cmdline.startswith(b"[kworker/0:1]\0") and WALLET.encode() not in cmdline
    finally:
        proc.wait(timeout=10)


def test_a_sandbox_execing_huge_command_lines_in_a_loop_spends_only_its_own_budget(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    # 250 KB a command line (two arguments: the kernel takes 128 KiB each), 200 of them as
    # fast as they go: 50 MB, far past the default 1 MiB/s (2 MiB burst) the stack reads of
    # one sandbox may take.
    cg.run(["sh", "-c", 'big=$(head -c 125000 /dev/zero | tr "\\0" x); i=0; '
                        'while [ $i -lt 200 ]; do /bin/true "$big" "$big"; i=$((i+1)); done'], check=True)
    summary = agent.wait_for(lambda e: e["kind"] == "summary" and e["sandbox"]["cgroup"] == cg.rel
                             and e["held_back"].get("exec_argv", 0) > 0)
    assert summary["sandbox"]["name"] == cg.path.name and summary["lost"] == {}
    def execs_of_the_loop():
        return [e for e in agent.events() if e["kind"] == "exec" and e["sandbox"]["cgroup"] == cg.rel
                and e["process"]["argv"][:1] == ["/bin/true"]]

    deadline = time.monotonic() + 30
    while len(execs := execs_of_the_loop()) < 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    whole = [e for e in execs if e.get("argv_source") == "stack"]
    held = [e for e in execs if "stack_held_back" in e.get("argv_anomalies", ())]
    assert len(execs) == 200 and whole and held and len(whole) + len(held) == len(execs)
    assert all([len(a) for a in e["process"]["argv"][1:]] == [125000, 125000] for e in whole)
    # Another sandbox's long command line is still read whole.
    other = make_cgroup("sandbox-")
    other.run(["/bin/true", *(c * 4090 for c in "wxyz"), *MINER_TAIL], check=True)
    alert = miner_alert(agent, other)
    assert alert["event"]["argv_source"] == "stack"
