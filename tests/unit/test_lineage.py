"""Sandbox identity follows lineage: the rule that picks an event's sandbox from the lineage
and current cgroups, the start-up scan, and the sandbox names the kernel tests by itself."""

from __future__ import annotations

import subprocess

from enrich_env import KTIME, FixedClock, fake_host

from ebpfguard.config import load_config
from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.lineage import lineage_sandbox, sandboxed_cgroups
from ebpfguard.enrich.sandbox_cache import SandboxCache
from ebpfguard.kernel.events import Header
from ebpfguard.kernel.load import kernel_name_prefixes, sandbox_name_test

SANDBOX = {"name": "sandbox-a", "cgroup": "/sandbox-a", "cgroup_id": 10, "runtime": "pattern"}
INNER = {"name": "sandbox-a", "cgroup": "/sandbox-a/sandbox-other", "cgroup_id": 11, "runtime": "pattern"}
ROOT = {"name": "host", "cgroup": "/", "cgroup_id": 1, "runtime": "host"}
OTHER = {"name": "sandbox-b", "cgroup": "/sandbox-b", "cgroup_id": 20, "runtime": "pattern"}


def test_a_process_without_lineage_is_where_it_is_now():
    assert lineage_sandbox(ROOT, None) is ROOT
    assert lineage_sandbox(SANDBOX, None) is SANDBOX


def test_a_process_that_left_its_sandbox_keeps_it_and_says_where_it_is_now():
    moved = lineage_sandbox(ROOT, SANDBOX)
    assert moved["name"] == "sandbox-a" and moved["cgroup"] == "/sandbox-a"
    assert moved["current_cgroup"] == "/" and moved["current_cgroup_id"] == 1


def test_a_sandboxed_process_moved_into_another_sandbox_keeps_its_first():
    assert lineage_sandbox(OTHER, SANDBOX)["name"] == "sandbox-a"
    assert lineage_sandbox(OTHER, SANDBOX)["current_cgroup"] == "/sandbox-b"


def test_a_move_inside_its_own_sandbox_keeps_the_precise_current_cgroup():
    assert lineage_sandbox(INNER, SANDBOX) is INNER


def test_a_lineage_cgroup_that_names_no_sandbox_falls_back_to_the_current_one():
    # The kernel's name test is wider than the matchers (a kubepods slice, say).
    assert lineage_sandbox(OTHER, ROOT) is OTHER


def test_a_lineage_cgroup_gone_before_it_was_resolved_is_unknown_not_host():
    gone = {"name": "unknown", "cgroup": None, "cgroup_id": 30, "runtime": None}
    assert lineage_sandbox(ROOT, gone)["name"] == "unknown"


def test_the_envelope_names_the_lineage_sandbox_of_a_process_now_in_the_root(tmp_path):
    host = fake_host(tmp_path)
    envelope = EventEnvelope("node-1", host.procs, SandboxCache(host.index, load_config()["sandbox"]), FixedClock())
    root_id = host.cgroups.stat().st_ino
    event = envelope.about_process("exit", Header(KTIME, root_id, 100, 100, 0, b"sh", host.sandbox_id))
    assert event["sandbox"]["name"] == "sandbox-a"
    assert event["sandbox"]["cgroup"] == "/sandbox-a/inner"
    assert event["sandbox"]["current_cgroup"] == "/"
    stayed = envelope.about_process("exit", Header(KTIME, host.sandbox_id, 100, 100, 0, b"sh", host.sandbox_id))
    assert "current_cgroup" not in stayed["sandbox"]


def test_the_start_up_scan_finds_sandboxed_cgroups_and_their_processes(tmp_path):
    host = fake_host(tmp_path)
    (host.cgroups / "cgroup.procs").write_text("1\n")
    (host.cgroups / "sandbox-a" / "cgroup.procs").write_text("100\n101\n")
    (host.cgroups / "sandbox-a" / "inner" / "cgroup.procs").write_text("")
    (host.cgroups / "system.slice").mkdir()
    (host.cgroups / "system.slice" / "cgroup.procs").write_text("50\n")
    found = {path: pids for _id, path, pids in sandboxed_cgroups(str(host.cgroups), load_config()["sandbox"])}
    assert found == {"/sandbox-a": [100, 101], "/sandbox-a/inner": []}


def test_the_kernel_tests_plain_prefixes_of_the_patterns_and_the_runtimes():
    settings = {"matchers": ["pattern", "kubernetes", "docker", "containerd", "systemd"],
                "patterns": ["sandbox-*", "agent-*", "ci-[0-9]*", "exact"], "systemd_units": ["runner.service"]}
    assert kernel_name_prefixes(settings) == [
        "sandbox-", "agent-", "exact", "kubepods", "docker-", "cri-containerd-", "runner.service"]
    assert kernel_name_prefixes({"matchers": ["docker"], "patterns": ["sandbox-*"]}) == ["docker-"]


def test_the_generated_name_test_matches_a_component_start_and_nothing_else(tmp_path):
    flag = sandbox_name_test(["sandbox-", "agent-"])
    assert flag.startswith("-DSANDBOX_NAME_AT(b, i)=(")
    macro = flag[len("-D"):].replace("=", " ", 1)
    src = tmp_path / "t.c"
    src.write_text(f"""#include <string.h>
#define PATH_MASK 127
#define {macro}
int main(int argc, char **argv) {{
    char b[128] = {{0}};
    strncpy(b, argv[1], 127);
    return SANDBOX_NAME_AT(b, 1) ? 0 : 1;
}}
""")
    subprocess.run(["cc", "-o", str(tmp_path / "t"), str(src)], check=True)
    rc = {path: subprocess.run([str(tmp_path / "t"), path]).returncode for path in
          ("/sandbox-x", "/agent-7", "/sandbox", "/host", "/xsandbox-y")}
    assert rc == {"/sandbox-x": 0, "/agent-7": 0, "/sandbox": 1, "/host": 1, "/xsandbox-y": 1}
