"""The agent runs with exactly the capabilities the systemd unit grants, and says which one is
missing when one is taken away (tests/unit/test_deploy_systemd.py ties the unit to REQUIRED)."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import RunningAgent, has_arg, marker

from ebpfguard.kernel.capabilities import REQUIRED

NOBODY = 65534


def setpriv_caps(caps, as_user: bool = False) -> tuple[str, ...]:
    """setpriv arguments leaving only `caps` (names like CAP_BPF), optionally as uid nobody."""
    wanted = ",".join(f"+{cap.removeprefix('CAP_').lower()}" for cap in caps)
    keep = f"-all,{wanted}" if wanted else "-all"
    # As root, exec gives every capability in the bounding set; as another uid, only ambient ones.
    user = ("--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", f"--ambient-caps={keep}") if as_user else ()
    return ("setpriv", *user, f"--inh-caps={keep}", f"--bounding-set={keep}")


@pytest.fixture
def shared_workdir():
    """A directory uid nobody can write its output to."""
    path = Path(tempfile.mkdtemp(prefix="ebpfguard-caps-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.mark.parametrize("as_user", [False, True], ids=["root-uid-bounded", "nobody-ambient"])
def test_agent_loads_every_probe_with_only_the_required_capabilities(shared_workdir, make_cgroup, as_user):
    agent = RunningAgent(shared_workdir, wrapper=setpriv_caps(REQUIRED, as_user))
    try:
        effective = Path(f"/proc/{agent.proc.pid}/status").read_text()
        assert f"Uid:\t{NOBODY if as_user else 0}" in effective
        token = marker()
        cg = make_cgroup("sandbox-")
        # A process of another uid, run by relative path: its exe needs CAP_SYS_PTRACE to read.
        cg.run(["setpriv", f"--reuid={NOBODY + 1 if as_user else NOBODY}", "--regid=65534", "--clear-groups",
                "sh", "-c", f"cd /bin && exec ./sh -c 'sleep 0.2; true' {token}"], check=True)
        event = agent.wait_for(has_arg(token))
        assert event["sandbox"]["name"] == cg.path.name
        assert event["process"]["exe"] == os.path.realpath("/bin/sh")
    finally:
        assert agent.stop() == 0, agent.stderr[-4000:]


@pytest.mark.parametrize("taken", sorted(REQUIRED))
def test_agent_without_one_capability_exits_2_naming_it(tmp_path, taken):
    wrapper = setpriv_caps([cap for cap in REQUIRED if cap != taken])
    done = subprocess.run([*wrapper, sys.executable, "-m", "ebpfguard", "run", "--output", str(tmp_path / "e.jsonl")],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.returncode == 2
    assert taken in done.stderr and "missing" in done.stderr
    assert "ready" not in done.stderr.splitlines()
