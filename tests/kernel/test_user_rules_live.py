"""User rules (docs/examples/user-rules.yaml) in the live agent: real processes in real
sandbox cgroups raise exactly the expected alerts, and `replay` of what the agent recorded
raises the same ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from conftest import RunningAgent
from test_flow_events import EchoServer, talk
from test_net_events import connect_from

REPO = Path(__file__).resolve().parents[2]
USER_RULES = REPO / "docs" / "examples" / "user-rules.yaml"
STRATUM_HELLO = '{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\\n'


@pytest.fixture(scope="module")
def trainer_dir(tmp_path_factory) -> Path:
    """Where this host's trainer is installed (a copy of head named trainer)."""
    directory = tmp_path_factory.mktemp("opt-trainer")
    shutil.copy("/usr/bin/head", directory / "trainer")
    return directory


@pytest.fixture(scope="module")
def user_agent(tmp_path_factory, trainer_dir):
    """An agent with the example user rules, and an overlay that tunes a list as an operator
    would (where the trainer lives here)."""
    workdir = tmp_path_factory.mktemp("user-rules-agent")
    overlay = workdir / "site.yaml"
    overlay.write_text(f"lists:\n  trainer_dirs: [{json.dumps(str(trainer_dir))}]\n")
    agent = RunningAgent(workdir, ("--rules", str(USER_RULES), "--rules", str(overlay)))
    agent.overlay = overlay
    yield agent
    assert agent.stop() == 0, agent.stderr[-4000:]


@pytest.fixture
def gpu_device():
    path = f"/dev/nvidia-ebpfguard-{uuid.uuid4().hex[:8]}"
    os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))  # /dev/null underneath
    yield path
    os.unlink(path)


def user_alerts(events, cgroups) -> Counter:
    rels = {cg.name: cg for cg in cgroups}
    return Counter((e["rule"], e["sandbox"]["name"]) for e in events
                   if e["kind"] == "alert" and e["rule"].startswith("user.") and e["sandbox"]["name"] in rels)


def test_user_rules_raise_exactly_the_expected_alerts_live_and_in_replay(
        user_agent, make_cgroup, tmp_path, trainer_dir, gpu_device):
    fake_curl = tmp_path / "curl"
    shutil.copy("/bin/true", fake_curl)  # named curl; never touches the network
    pipe = make_cgroup("sandbox-")
    smtp = make_cgroup("sandbox-")
    gpu = make_cgroup("sandbox-")
    trainer = make_cgroup("sandbox-")
    miner = make_cgroup("sandbox-")
    bench = make_cgroup("sandbox-bench-")
    cgroups = [pipe.path, smtp.path, gpu.path, trainer.path, miner.path, bench.path]

    pipe.run(["sh", "-c", f"{fake_curl} -fsSL http://127.0.0.1:9/install.sh | sh"], check=True)
    connect_from(smtp, "4", "127.0.0.1", 25)
    gpu.run(["head", "-c", "1", gpu_device], check=True)
    trainer.run([str(trainer_dir / "trainer"), "-c", "1", gpu_device], check=True)
    server = EchoServer()
    try:
        talk(miner, "4", server.port, STRATUM_HELLO)
        talk(bench, "4", server.port, STRATUM_HELLO)
    finally:
        server.close()
    # A last exec in each sandbox: once it is in, everything before it was read and judged.
    for cg in (pipe, smtp, gpu, trainer, miner, bench):
        token = uuid.uuid4().hex
        cg.run(["/bin/true", token], check=True)
        user_agent.wait_for(lambda e, t=token: e["kind"] == "exec" and t in e["process"]["argv"])

    expected = Counter({
        ("user.download_piped_to_shell", pipe.path.name): 1,
        ("user.curl_in_sandbox", pipe.path.name): 1,
        ("user.smtp_from_sandbox", smtp.path.name): 1,
        ("user.gpu_not_trainer", gpu.path.name): 1,
        ("user.stratum_outside_allowlist", miner.path.name): 1,
    })
    events = user_agent.events()
    assert user_alerts(events, cgroups) == expected
    smtp_alert = next(e for e in events if e["kind"] == "alert" and e["rule"] == "user.smtp_from_sandbox"
                      and e["sandbox"]["name"] == smtp.path.name)
    assert smtp_alert["summary"] == f"{smtp.path.name} connected to port 25"
    assert smtp_alert["severity"] == "medium" and smtp_alert["event"]["dport"] == 25

    # The same events, recorded, through replay: the same alerts.
    stream = tmp_path / "stream.jsonl"
    stream.write_text("".join(json.dumps(e) + "\n" for e in events
                              if e["kind"] != "alert" and e["sandbox"]["name"] in {cg.name for cg in cgroups}))
    replayed = subprocess.run([sys.executable, "-m", "ebpfguard", "replay", str(stream), "--rules", str(USER_RULES),
                               "--rules", str(user_agent.overlay)], capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 1, replayed.stderr
    alerts = [json.loads(line) for line in replayed.stdout.splitlines()]
    assert user_alerts(alerts, cgroups) == expected
