"""A sandbox cannot leave its name behind (docs/lineage.md): identity follows lineage, and
escape and tamper attempts from real sandbox cgroups are caught; the host doing the same
raises nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from conftest import RunningAgent, alert_for, has_arg, marker, miner_command_line
from prometheus_client.parser import text_string_to_metric_families

from ebpfguard.kernel.links import SYS_BPF

BPF_PROG_GET_NEXT_ID = 11
# One bpf() call, whatever its result: what the kernel sees is the attempt.
BPF_CALL = (f"import ctypes; ctypes.CDLL(None, use_errno=True).syscall({SYS_BPF}, {BPF_PROG_GET_NEXT_ID}, "
            "ctypes.create_string_buffer(16), 16)")


def from_sandbox(cg, what: str):
    """Matches events of this sandbox with this `what`."""
    return lambda e: e.get("what") == what and e["sandbox"]["name"] == cg.path.name


def test_a_process_moved_to_the_cgroup2_root_keeps_its_sandbox_and_its_children_inherit_it(
        agent, make_cgroup, cgroup_root, tmp_path):
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    cg = make_cgroup("sandbox-")
    token = marker()
    # A renamed miner started after the shell wrote its pid into the root's cgroup.procs.
    cg.run(["sh", "-c", f"echo $$ > {cgroup_root}/cgroup.procs; /bin/true {token}-child; "
                        f"{miner_command_line(kworker, f'-p {token}')}"], capture_output=True)

    escape = agent.wait_for(alert_for("sandbox.escape", from_sandbox(cg, "cgroup_move")))
    assert escape["severity"] == "critical"
    assert escape["evidence"]["from"] == cg.path.name
    assert escape["evidence"]["to_cgroup"] == "/" and escape["evidence"]["to_sandbox"] == "host"
    miner = agent.wait_for(alert_for("miner.exec", lambda e: token in e["process"]["argv"]))
    assert miner["sandbox"]["name"] == cg.path.name
    assert miner["sandbox"]["current_cgroup"] == "/"
    child = agent.wait_for(has_arg(f"{token}-child"))
    assert child["sandbox"]["name"] == cg.path.name and child["sandbox"]["current_cgroup"] == "/"


def test_unshare_of_a_network_namespace_from_a_sandbox_raises_sandbox_escape(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    cg.run(["unshare", "-n", "/bin/true", marker()])
    alert = agent.wait_for(alert_for("sandbox.escape", from_sandbox(cg, "unshare")))
    assert alert["evidence"]["namespaces"] == ["net"]


def test_setns_into_another_network_namespace_from_a_sandbox_raises_sandbox_escape(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    # From a namespace of its own back into the host's (this test process's).
    done = cg.run(["unshare", "-n", "nsenter", f"--net=/proc/{os.getpid()}/ns/net", "/bin/true", marker()],
                  capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    alert = agent.wait_for(alert_for("sandbox.escape", from_sandbox(cg, "setns")))
    assert alert["evidence"]["namespaces"] == ["net"]


def test_bpf_and_a_signal_to_the_agent_from_a_sandbox_raise_agent_tamper(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    cg.run([sys.executable, "-c", BPF_CALL])
    cg.run(["sh", "-c", f"kill -0 {agent.proc.pid}"])
    bpf = agent.wait_for(alert_for("agent.tamper", from_sandbox(cg, "bpf")))
    assert bpf["severity"] == "critical" and bpf["evidence"]["bpf_cmd"] == "BPF_PROG_GET_NEXT_ID"
    signal = agent.wait_for(alert_for("agent.tamper", from_sandbox(cg, "signal")))
    assert signal["evidence"]["target_pid"] == agent.proc.pid
    assert signal["evidence"]["signal"] == "0"


def test_a_sandbox_naming_child_cgroups_sandbox_other_or_host_changes_nothing(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    token = marker()
    cg.run(["sh", "-c", f"mkdir {cg.path}/sandbox-other {cg.path}/host; "
                        f"echo $$ > {cg.path}/sandbox-other/cgroup.procs; /bin/true {token}-other; "
                        f"echo $$ > {cg.path}/host/cgroup.procs; /bin/true {token}-host"])
    other = agent.wait_for(has_arg(f"{token}-other"))
    host = agent.wait_for(has_arg(f"{token}-host"))
    assert other["sandbox"]["name"] == cg.path.name and "current_cgroup" not in other["sandbox"]
    assert host["sandbox"]["name"] == cg.path.name and host["sandbox"]["cgroup"] == f"{cg.rel}/host"
    moves = [e for e in agent.events() if e["kind"] == "escape" and from_sandbox(cg, "cgroup_move")(e)]
    assert {m["to_cgroup"] for m in moves} == {f"{cg.rel}/sandbox-other", f"{cg.rel}/host"}
    assert {m["to_sandbox"] for m in moves} == {cg.path.name}
    # Alerts are written right after their event: none came with the moves.
    assert not [e for e in agent.events() if e["kind"] == "alert" and e["sandbox"]["name"] == cg.path.name]


def test_host_processes_doing_the_same_raise_nothing(agent, cgroup_root):
    token = marker()
    subprocess.run(["unshare", "-n", "nsenter", f"--net=/proc/{os.getpid()}/ns/net", "/bin/true", token],
                   check=True)
    subprocess.run([sys.executable, "-c", BPF_CALL, token], check=True)
    subprocess.run(["sh", "-c", f"kill -0 {agent.proc.pid}; /bin/true {token}; "
                                f"cat {cgroup_root}/cgroup.procs > /dev/null; /bin/true {token}-end"], check=True)
    agent.wait_for(has_arg(f"{token}-end"))
    pids = {e["process"]["pid"] for e in agent.events()
            if e["kind"] == "exec" and token in " ".join(e["process"]["argv"])}
    assert len(pids) >= 3
    raised = [e for e in agent.events() if e["kind"] in ("escape", "tamper", "alert")
              and e["process"]["pid"] in pids]
    assert not raised


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of an agent's /metrics, by name."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if not s.labels}


def scrape_labelled(url: str, name: str) -> list[tuple[dict, float]]:
    """(labels, value) of each sample of one metric."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [(s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name]


@pytest.fixture(scope="module")
def own_agent(tmp_path_factory) -> Iterator[RunningAgent]:
    """An agent of these tests alone (its probes get detached): a lineage map of 64."""
    workdir = tmp_path_factory.mktemp("own-agent")
    config = workdir / "small-lineage.yaml"
    config.write_text("sandbox:\n  lineage_max_processes: 64\n")
    running = RunningAgent(workdir, ("--config", str(config)))
    yield running
    running.stop()


def test_the_lineage_map_stays_bounded_under_pid_churn_and_counts_what_it_pushed_out(own_agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    # More sandboxed processes alive at once than the map holds, then churn through more.
    sleepers = cg.popen(["sh", "-c", "for i in $(seq 200); do sleep 120 & done; wait"])
    try:
        cg.run(["sh", "-c", "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done"])
        counts = scrape(own_agent.metrics_url)
        assert 0 < counts["ebpfguard_lineage_processes"] <= 64
        assert counts["ebpfguard_lineage_evictions_total"] >= 200 - 64
    finally:
        (cg.path / "cgroup.kill").write_text("1")
        sleepers.wait(timeout=30)


def agent_link_ids(pid: int) -> list[int]:
    """The BPF links an agent holds, from its file descriptors' fdinfo."""
    ids = []
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            found = re.search(r"^link_id:\s+(\d+)$", info.read_text(), re.MULTILINE)
        except OSError:
            continue
        if found:
            ids.append(int(found.group(1)))
    return ids


def test_detaching_the_agents_probes_is_an_alert_and_a_metric(own_agent):
    links = agent_link_ids(own_agent.proc.pid)
    assert links, "the agent holds no BPF link"
    for link in links:
        subprocess.run(["bpftool", "link", "detach", "id", str(link)], check=True)
    for family in ("net", "flow"):  # the families with cgroup links
        alert = own_agent.wait_for(alert_for(
            "agent.tamper", lambda e: e.get("what") == "probe_detached" and e.get("probe") == family))
        assert alert["severity"] == "critical"
    attached = {labels["probe"]: value for labels, value in scrape_labelled(
        own_agent.metrics_url, "ebpfguard_probe_attached")}
    assert attached["net"] == 0 and attached["flow"] == 0 and attached["exec"] == 1
