"""Local storage (thread and socket) in the probes, and the table fallback for kernels without it."""

import socket
import subprocess
import sys

import pytest

from ebpfguard.config import load_config
from ebpfguard.kernel import features
from ebpfguard.kernel.events import ConnectRecord, SocketRecord, decode
from ebpfguard.kernel.load import ProbeSet, local_storage_flags

CLIENT = ("import os, socket, sys\n"
          "s = socket.socket()\n"
          "print(os.getpid(), s.connect_ex(('127.0.0.1', int(sys.argv[1]))), flush=True)\n")


def test_the_helper_probe_tells_an_allowed_helper_from_an_unknown_one():
    assert features.helper_allowed(features.PROG_TYPE_TRACEPOINT, features.FUNC_MAP_LOOKUP_ELEM)
    assert not features.helper_allowed(features.PROG_TYPE_TRACEPOINT, 100_000)


def test_this_kernel_gives_the_probes_thread_storage():
    # Linux 6.x here: the fallback below is what kernels before 5.11 run.
    assert local_storage_flags() == ["-DHAVE_TASK_STORAGE"]


@pytest.fixture(scope="module")
def fallback_probes(cgroup_root):
    """Every probe family built as on a kernel whose hooks may not call the local-storage helpers."""
    records = []
    config = load_config(None)
    probes = ProbeSet.load(config, str(cgroup_root), records.extend, helper_allowed=lambda *_: False)
    yield probes, records
    probes.close()


def test_without_thread_storage_a_connect_still_carries_its_result(fallback_probes, make_cgroup):
    probes, records = fallback_probes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: the connect is refused
    cg = make_cgroup("sandbox-")
    out = cg.run([sys.executable, "-c", CLIENT, str(port)], capture_output=True, text=True, check=True).stdout
    pid, result = map(int, out.split())
    assert result == 111
    seen = []
    for _ in range(50):
        probes.drain(100)
        seen = [decode(r) for r in records]
        if any(isinstance(r, ConnectRecord) and r.hdr.pid == pid for r in seen):
            break
    connects = [r for r in seen if isinstance(r, ConnectRecord) and r.hdr.pid == pid]
    sockets = [r for r in seen if isinstance(r, SocketRecord) and r.hdr.pid == pid and r.family == socket.AF_INET]
    assert [(c.dport, c.daddr, c.retval, c.in_syscall) for c in connects] == [(port, bytes([127, 0, 0, 1]), -111, True)]
    assert sockets and sockets[0].retval >= 0 and sockets[0].type & 0xf == socket.SOCK_STREAM  # SOCK_CLOEXEC above


@pytest.fixture(scope="module")
def probes(cgroup_root):
    """Every probe family as this kernel builds it (thread storage on)."""
    records = []
    probes = ProbeSet.load(load_config(None), str(cgroup_root), records.extend)
    yield probes, records
    probes.close()


TWO_CONNECTS = ("import os, socket, sys\n"
                "for _ in range(2):\n"
                "    with socket.socket() as s:\n"
                "        s.connect_ex(('127.0.0.1', int(sys.argv[1])))\n"
                "    print(os.getpid(), flush=True)\n"
                "    sys.stdin.readline()\n")


def test_a_thread_forgets_the_lineage_it_remembered_once_userspace_names_its_cgroup_a_sandbox(
        probes, make_cgroup):
    # The net probes remember each thread's lineage (bpf/common.h lineage_remembered): a cgroup
    # only userspace knows for a sandbox (a systemd unit in the config, say) must still count
    # from the moment userspace says so, for a thread that remembered "no sandbox" before.
    probes, records = probes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cg = make_cgroup("plain-")
    cgroup_id = cg.path.stat().st_ino
    child = cg.popen([sys.executable, "-c", TWO_CONNECTS, str(port)], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True)
    try:
        pid = int(child.stdout.readline())
        probes.mark_sandbox_cgroup(cgroup_id)
        child.stdin.write("\n")
        child.stdin.flush()
        child.stdout.readline()
        child.stdin.write("\n")
        child.stdin.close()
        assert child.wait(20) == 0
    finally:
        child.kill()
    connects = []
    for _ in range(50):
        probes.drain(100)
        connects = [r for r in map(decode, records) if isinstance(r, ConnectRecord) and r.hdr.pid == pid]
        if len(connects) == 2:
            break
    assert [(c.hdr.cgroup_id, c.hdr.lineage_cgroup_id) for c in connects] == [(cgroup_id, 0), (cgroup_id, cgroup_id)]
    sockets = [r for r in map(decode, records) if isinstance(r, SocketRecord) and r.hdr.pid == pid
               and r.family == socket.AF_INET]
    assert [s.hdr.lineage_cgroup_id for s in sockets] == [0, cgroup_id]
