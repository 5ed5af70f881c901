"""socket and connect events, and cgroup hooks that never outlive the agent."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from bcc import BPFAttachType
from conftest import RunningAgent
from netns import enter, isolated_netns

from bench.procinfo import held_program_ids
from ebpfguard.kernel.links import attached_program_ids

CLIENT = textwrap.dedent("""
    import errno, json, os, socket, sys
    family, host, port, blocking = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
    s = socket.socket(socket.AF_INET6 if family == "6" else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(blocking)
    try:
        s.connect((host, port))
        result = 0
    except OSError as exc:
        result = -exc.errno
    print(json.dumps({"pid": os.getpid(), "result": result}))
""")


def connect_from(cgroup, family, host, port, blocking=True, preexec=None):
    """Connect from a process in `cgroup`; returns its pid and the connect result (-errno)."""
    def setup():
        cgroup.enter()
        if preexec:
            preexec()
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, family, host, str(port), "1" if blocking else "0"],
        preexec_fn=setup, capture_output=True, text=True, check=True, timeout=20)
    reply = json.loads(proc.stdout)
    return reply["pid"], reply["result"]


@pytest.fixture
def listener():
    """A TCP listener on loopback; yields (family, host, port)."""
    made = []

    def make(family):
        af = socket.AF_INET6 if family == "6" else socket.AF_INET
        host = "::1" if family == "6" else "127.0.0.1"
        s = socket.socket(af, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.listen(8)
        made.append(s)
        return host, s.getsockname()[1]

    yield make
    for s in made:
        s.close()


def free_port(family):
    af = socket.AF_INET6 if family == "6" else socket.AF_INET
    with socket.socket(af) as s:
        s.bind(("::1" if family == "6" else "127.0.0.1", 0))
        return s.getsockname()[1]


def connect_event(agent, pid):
    return agent.wait_for(lambda e: e["kind"] == "connect" and e["process"]["pid"] == pid)


@pytest.mark.parametrize("family", ["4", "6"])
def test_accepted_connect_has_address_port_result_and_sandbox(agent, make_cgroup, listener, family):
    cg = make_cgroup("sandbox-")
    host, port = listener(family)
    pid, result = connect_from(cg, family, host, port)
    event = connect_event(agent, pid)
    assert result == 0
    assert (event["daddr"], event["dport"], event["retval"]) == (host, port, 0)
    assert event["family"] == ("AF_INET6" if family == "6" else "AF_INET")
    assert event["sandbox"]["name"] == cg.path.name
    assert event["host_netns"] is True


@pytest.mark.parametrize("family", ["4", "6"])
def test_refused_connect_reports_econnrefused(agent, make_cgroup, family):
    cg = make_cgroup("sandbox-")
    port = free_port(family)
    pid, result = connect_from(cg, family, "::1" if family == "6" else "127.0.0.1", port)
    event = connect_event(agent, pid)
    assert result == -111 and event["retval"] == -111 and event["dport"] == port


@pytest.mark.parametrize("family", ["4", "6"])
def test_non_blocking_connect_reports_einprogress(agent, make_cgroup, listener, family):
    cg = make_cgroup("sandbox-")
    host, port = listener(family)
    pid, result = connect_from(cg, family, host, port, blocking=False)
    event = connect_event(agent, pid)
    # Loopback may complete at once; whatever the syscall returned is what we report.
    assert result in (0, -115) and event["retval"] == result
    assert event["daddr"] == host and event["dport"] == port


SOCKETS = textwrap.dedent("""
    import os, socket
    for args in ((socket.AF_INET, socket.SOCK_STREAM, 0), (socket.AF_INET, socket.SOCK_DGRAM, 0),
                 (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)):
        socket.socket(*args).close()
    print(os.getpid())
""")


def test_socket_events_for_tcp_udp_and_raw(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    pid = int(cg.run([sys.executable, "-c", SOCKETS], capture_output=True, text=True, check=True).stdout)
    seen = []
    for sock_type in ("SOCK_STREAM", "SOCK_DGRAM", "SOCK_RAW"):
        seen.append(agent.wait_for(lambda e: e["kind"] == "socket" and e["process"]["pid"] == pid
                                   and e["type"] == sock_type))
    assert [(e["family"], e["protocol"]) for e in seen] == [("AF_INET", "default"), ("AF_INET", "default"), ("AF_INET", "icmp")]
    assert all(e["retval"] >= 0 and e["sandbox"]["name"] == cg.path.name for e in seen)


def test_connect_to_metadata_address_inside_a_test_namespace_is_seen(agent, make_cgroup):
    cg = make_cgroup("sandbox-")
    with isolated_netns("169.254.169.254/32") as ns:
        pid, result = connect_from(cg, "4", "169.254.169.254", 80, preexec=lambda: enter(ns))
    event = connect_event(agent, pid)
    assert result == -111  # nothing listens there: the namespace answers with a reset
    assert (event["daddr"], event["dport"]) == ("169.254.169.254", 80)
    assert event["host_netns"] is False
    assert event["sandbox"]["name"] == cg.path.name


def test_sigkilled_agent_leaves_no_program_on_the_cgroup_root(tmp_path, cgroup_root):
    # Other agents may attach and detach programs meanwhile: only this agent's own count.
    root = str(cgroup_root)
    types = (BPFAttachType.CGROUP_INET4_CONNECT, BPFAttachType.CGROUP_INET6_CONNECT)
    own = RunningAgent(tmp_path)
    held = held_program_ids(own.proc.pid)
    during = {t: set(attached_program_ids(root, t)) & held for t in types}
    os.kill(own.proc.pid, signal.SIGKILL)
    own.stop()  # reaps it and closes its log
    after = {t: set(attached_program_ids(root, t)) for t in types}
    for t in types:
        assert during[t], "the agent's programs were not attached"
        assert not during[t] & after[t], "programs stayed attached after SIGKILL"


IO_URING_CONNECT = r"""
#include <arpa/inet.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct io_uring ring;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[1])) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (io_uring_queue_init(4, &ring, 0)) return 2;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_connect(sqe, fd, (struct sockaddr *)&sa, sizeof(sa));
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    io_uring_wait_cqe(&ring, &cqe);
    printf("%d %d\n", getpid(), cqe->res);
    return 0;
}
"""


def test_connect_made_through_io_uring_is_seen_without_a_syscall(agent, make_cgroup, listener, tmp_path):
    source, binary = tmp_path / "uring_connect.c", tmp_path / "uring_connect"
    source.write_text(IO_URING_CONNECT)
    subprocess.run(["cc", "-O2", "-o", str(binary), str(source), "-luring"], check=True)
    cg = make_cgroup("sandbox-")
    host, port = listener("4")
    out = cg.run([str(binary), str(port)], capture_output=True, text=True, check=True)
    pid, result = map(int, out.stdout.split())
    assert result == 0
    event = connect_event(agent, pid)
    assert (event["daddr"], event["dport"]) == (host, port)
    assert event["retval"] is None and "retval" in event["partial"]
    assert event["sandbox"]["name"] == cg.path.name
