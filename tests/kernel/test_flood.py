"""A flood cannot blind (issue 16): a sandbox looping on connect() to a closed port neither
hides its own miners nor another sandbox's, what the kernel does not send is summarised per
sandbox, and agent.flooded names the sandbox.

Two agents: the shared one (default per-sandbox rate limit), and one with the rate limit off
and a tiny bulk ring, so that the ring really overflows and the losses must be charged to the
flooding sandbox while exec records, in a ring of their own, still all arrive. Each flood lasts
a few seconds (the test host has two cores)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable, Optional

import pytest
from conftest import RunningAgent, alert_for, marker, miner_command_line
from netns import enter, isolated_netns
from test_net_events import connect_from

FLOOD_SECONDS = 3
MINERS_PER_SANDBOX = 10

FLOODER = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    double seconds = atof(argv[2]);
    struct timespec start, now;
    long connects = 0;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        connect(s, (struct sockaddr *)&to, sizeof(to));
        close(s);
        if ((++connects & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
                break;
        }
    }
    printf("%ld\n", connects);
    return 0;
}
"""


@pytest.fixture(scope="module")
def flooder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("flood")
    (tmp / "flooder.c").write_text(FLOODER)
    subprocess.run(["cc", "-O2", "-o", str(tmp / "flooder"), str(tmp / "flooder.c")], check=True)
    return tmp / "flooder"


@pytest.fixture(scope="module")
def lossy_agent(tmp_path_factory):
    """An agent with the rate limit off and a 16 KiB bulk ring: a flood overflows it."""
    workdir = tmp_path_factory.mktemp("lossy-agent")
    config = workdir / "config.yaml"
    config.write_text("probes:\n  ring_buffer_pages: 4\n  rate_limit:\n    events_per_s: 0\n")
    running = RunningAgent(workdir, ("--config", str(config)))
    yield running
    assert running.stop() == 0, running.stderr[-4000:]


def closed_port() -> int:
    """A loopback port nothing listens on (bound for a moment to find a free one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flood_while_miners_start(make_cgroup, flooder: Path, tmp_path: Path, during=lambda flood_cg: None):
    """Two flooders in one sandbox; meanwhile miners start there and in a quiet sandbox, after
    `during(flooding cgroup)`. Returns (flooding cgroup, quiet cgroup, {token: cgroup} of the
    miners, connects made)."""
    flood_cg, quiet_cg = make_cgroup("sandbox-flood-"), make_cgroup("sandbox-quiet-")
    port = closed_port()
    floods = [flood_cg.popen([str(flooder), str(port), str(FLOOD_SECONDS)], stdout=subprocess.PIPE, text=True)
              for _ in range(2)]
    kworker = tmp_path / "kworker"
    shutil.copy("/bin/sleep", kworker)
    miners = {}
    time.sleep(0.5)  # the flood is under way: the sandbox's connect budget is spent
    during(flood_cg)
    for _ in range(MINERS_PER_SANDBOX):
        for cg in (quiet_cg, flood_cg):
            token = marker()
            miners[token] = cg
            # sleep rejects these arguments and exits: the exec itself is what gets flagged.
            cg.run(["sh", "-c", miner_command_line(kworker, f"-p {token}")], capture_output=True)
    connects = sum(int(proc.communicate(timeout=60)[0]) for proc in floods)
    return flood_cg, quiet_cg, miners, connects


def wait_until(agent: RunningAgent, done: Callable[[list], bool], timeout: float = 30.0, what: Optional[dict] = None) -> list:
    """Every event so far, once `done(events)` holds (within a generous `timeout`); `what`,
    which `done` may fill, is shown when it never does."""
    deadline = time.monotonic() + timeout
    while not done(events := agent.events()):
        assert time.monotonic() < deadline, f"condition not reached in time: {what or ''}"
        time.sleep(0.2)
    return events


def flagged_miners(events: list, miners: dict) -> set:
    return {token for e in events if e["kind"] == "alert" and e["rule"] == "miner.exec"
            for token in miners if token in e["event"]["process"]["argv"]}


def of_sandbox(events: list, kind: str, cg) -> list:
    return [e for e in events if e["kind"] == kind and e["sandbox"]["cgroup"] == cg.rel]


def test_connect_flood_is_rate_limited_and_summarised_without_hiding_a_miner(agent, make_cgroup, flooder, tmp_path):
    metadata = []

    def connect_to_metadata(flood_cg):
        with isolated_netns("169.254.169.254/32") as ns:
            metadata.append(connect_from(flood_cg, "4", "169.254.169.254", 80, preexec=lambda: enter(ns))[0])

    flood_cg, quiet_cg, miners, connects = flood_while_miners_start(make_cgroup, flooder, tmp_path,
                                                                    connect_to_metadata)
    events = wait_until(agent, lambda evs: flagged_miners(evs, miners) == set(miners))
    assert len(miners) == 2 * MINERS_PER_SANDBOX  # 10 of 10 in each sandbox, flooding or not

    made = connects + len(metadata)

    def connects_accounted(evs):
        sent = len(of_sandbox(evs, "connect", flood_cg))
        summaries = of_sandbox(evs, "summary", flood_cg)
        held = sum(s["held_back"].get("connect", 0) for s in summaries)
        lost = sum(s["lost"].get("net", 0) for s in summaries)
        accounted.update(made=made, sent=sent, held=held, lost=lost, summaries=len(summaries))
        return made - lost <= sent + held <= made

    accounted: dict = {}

    # Never silently gone: every connect is an event, or counted in a summary of its sandbox.
    events = wait_until(agent, connects_accounted, what=accounted)
    summaries = of_sandbox(events, "summary", flood_cg)
    assert summaries and all(s["sandbox"]["name"] == flood_cg.path.name for s in summaries)
    assert sum(s["held_back"].get("connect", 0) for s in summaries) > connects / 2
    assert of_sandbox(events, "summary", quiet_cg) == []
    # The rate limit never holds back a connect to the metadata service.
    alert = agent.wait_for(alert_for("egress.internal", lambda e: e["process"]["pid"] == metadata[0]))
    assert alert["severity"] == "critical"
    flooded = agent.wait_for(alert_for("agent.flooded", lambda e: e["sandbox"]["cgroup"] == flood_cg.rel))
    assert flooded["severity"] == "high" and sum(flooded["evidence"]["held_back"].values()) >= 5000


def test_overflowing_bulk_ring_costs_no_exec_and_its_losses_name_the_flooding_sandbox(
        lossy_agent, make_cgroup, flooder, tmp_path):
    flood_cg, quiet_cg, miners, _ = flood_while_miners_start(make_cgroup, flooder, tmp_path)
    events = wait_until(lossy_agent, lambda evs: flagged_miners(evs, miners) == set(miners))
    assert len(flagged_miners(events, miners)) == 2 * MINERS_PER_SANDBOX
    events = wait_until(lossy_agent, lambda evs: any(
        s["lost"].get("net", 0) > 0 for s in of_sandbox(evs, "summary", flood_cg)))
    assert all(s["held_back"] == {} for s in of_sandbox(events, "summary", flood_cg))  # limit off
    assert of_sandbox(events, "summary", quiet_cg) == []
    lossy_agent.wait_for(alert_for("agent.flooded", lambda e: e["sandbox"]["cgroup"] == flood_cg.rel))
    metrics = urllib.request.urlopen(lossy_agent.metrics_url, timeout=10).read().decode()
    assert f'ebpfguard_events_lost_by_sandbox_total{{probe="net",sandbox="{flood_cg.path.name}"}}' in metrics
    assert 'ebpfguard_events_lost_total{probe="net"}' in metrics
    assert 'ebpfguard_events_lost_total{probe="exec"} 0.0' in metrics  # a ring of its own


def test_child_cgroups_a_sandbox_makes_share_its_budget(agent, make_cgroup, flooder):
    from ebpfguard.config import load_config

    limit = load_config()["probes"]["rate_limit"]
    sandbox = make_cgroup("sandbox-nest-")
    children = [sandbox.child(f"c{i}") for i in range(4)]
    port = closed_port()
    # One shell in the sandbox forks four flooders, each moving itself into a child cgroup of
    # its own first: a bucket per cgroup would give the sandbox four budgets.
    script = " ".join(f"(echo 0 > {c.path}/cgroup.procs; exec {flooder} {port} {FLOOD_SECONDS}) &"
                      for c in children) + " wait"
    done = sandbox.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    made = sum(int(n) for n in done.stdout.split())
    assert made, done.stderr

    def ours(evs, kind):
        return [e for e in evs if e["kind"] == kind and e["sandbox"]["name"] == sandbox.path.name]

    def accounted(evs):
        sent = len(ours(evs, "connect"))
        held = sum(s["held_back"].get("connect", 0) for s in ours(evs, "summary"))
        lost = sum(s["lost"].get("net", 0) for s in ours(evs, "summary"))
        seen.update(made=made, sent=sent, held=held, lost=lost, summaries=len(ours(evs, "summary")))
        return made - lost <= sent + held <= made

    seen: dict = {}
    # Exact: a held-back count is never lost to a read racing the probe's increment.
    events = wait_until(agent, accounted, what=seen)
    sent = len(ours(events, "connect"))
    budget = limit["burst"] + limit["events_per_s"] * (FLOOD_SECONDS + 1)
    assert made > 4 * budget  # each flooder alone could spend a whole budget
    assert sent <= budget + limit["burst"]  # one budget for the sandbox, not four
