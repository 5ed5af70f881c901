"""miner.tuning in the live agent: MSR and huge page tuning from a sandbox."""

import os
import shutil
import sys
import uuid

import pytest
from conftest import alert_for, has_arg, marker

NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


@pytest.fixture
def msr_like_device():
    """A character device at /dev/cpu/<name>/msr (/dev/null underneath), as the msr module makes."""
    directory = f"/dev/cpu/ebpfguard-{uuid.uuid4().hex[:8]}"
    os.makedirs(directory)
    path = f"{directory}/msr"
    os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))
    yield path
    os.unlink(path)
    os.rmdir(directory)


def test_modprobe_msr_with_writes_allowed_from_a_sandbox_alerts(agent, make_cgroup, tmp_path):
    # A stand-in named modprobe: the exec's argument grammar is what is judged.
    modprobe = tmp_path / "modprobe"
    shutil.copy("/bin/true", modprobe)
    cg = make_cgroup("sandbox-")
    token = marker()
    cg.run([str(modprobe), "msr", "allow_writes=on", f"dyndbg={token}"], check=True)
    alert = agent.wait_for(alert_for("miner.tuning", has_arg(f"dyndbg={token}")))
    assert alert["evidence"]["action"] == "load_msr_module" and alert["severity"] == "high"
    assert alert["sandbox"]["name"] == cg.path.name


def test_opening_an_msr_device_from_a_sandbox_alerts(agent, make_cgroup, msr_like_device):
    cg = make_cgroup("sandbox-")
    cg.run(["head", "-c", "1", msr_like_device], check=True)
    alert = agent.wait_for(alert_for("miner.tuning", lambda e: e["kind"] == "open" and e["filename"] == msr_like_device))
    assert alert["evidence"]["action"] == "open_msr_device"
    assert alert["sandbox"]["name"] == cg.path.name
    # The open probe carries it, but it is no GPU.
    assert not [e for e in agent.events() if e["kind"] == "alert" and e["rule"] == "gpu.use"
                and e["event"].get("filename") == msr_like_device]


def test_writing_nr_hugepages_alerts_and_reading_it_is_not_even_reported(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    # Writes back the value it reads: the host's setting does not change.
    rewrite = f"p='{NR_HUGEPAGES}'; v=open(p).read(); open(p, 'w').write(v)"
    proc = cg.run([sys.executable, "-c", rewrite], check=True)
    assert proc.returncode == 0
    alert = agent.wait_for(alert_for("miner.tuning", lambda e: e["kind"] == "open" and e["filename"] == NR_HUGEPAGES
                                     and e["sandbox"]["cgroup"] == cg.rel))
    assert alert["evidence"]["action"] == "write_setting" and alert["severity"] == "medium"
    reader = make_cgroup("sandbox-")
    token = marker()
    reader.run([sys.executable, "-c", f"open('{NR_HUGEPAGES}').read()", token], check=True)
    agent.wait_for(has_arg(token))
    later = marker()
    reader.run(["/bin/true", later])
    agent.wait_for(has_arg(later))
    assert not [e for e in agent.events() if e["kind"] == "open" and e["sandbox"]["cgroup"] == reader.rel]
