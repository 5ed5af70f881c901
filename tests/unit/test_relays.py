"""Through local relays: a host alert names the sandbox whose loopback connection the alerting
process holds, from a /proc tree made here."""

from __future__ import annotations

import os

from ebpfguard.detect.relays import RelayIndex, local_ports_by_inode

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5002 1
   2: 0100007F:C350 0100007F:0D05 01 00000000:00000000 00:00000000 00000000     0        0 5003 1
"""


def proc_with_relay(tmp_path, pid=300, inodes=(5001, 5002, 5003)):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(TCP)
    (tmp_path / "net" / "tcp6").write_text(TCP.splitlines()[0] + "\n")
    fd = tmp_path / str(pid) / "fd"
    fd.mkdir(parents=True)
    for n, inode in enumerate(inodes):
        os.symlink(f"socket:[{inode}]", fd / str(n + 3))
    os.symlink("/dev/null", fd / "0")
    return str(tmp_path)


def connect(sandbox="sandbox-a", daddr="127.0.0.1", dport=8080):
    return {"kind": "connect", "daddr": daddr, "dport": dport, "sandbox": {"name": sandbox, "cgroup": f"/{sandbox}"},
            "process": {"pid": 42, "comm": "python3"}}


def host_alert(pid=300, ancestry=()):
    return {"kind": "alert", "rule": "miner.stratum", "sandbox": {"name": "host"},
            "process": {"pid": pid, "comm": "proxy", "ancestry": list(ancestry)}, "evidence": {"variant": "monero"}}


def test_socket_inodes_map_to_their_local_ports():
    assert local_ports_by_inode(TCP) == {5001: 8080, 5002: 8080, 5003: 50000}


def test_a_relay_holding_the_port_a_sandbox_connected_to_gets_the_sandbox_named(tmp_path):
    relays = RelayIndex(proc_with_relay(tmp_path))
    relays.observe(connect())
    alert = relays.attribute(host_alert())
    assert alert["sandbox"]["name"] == "sandbox-a"
    assert alert["evidence"]["variant"] == "monero"
    assert alert["evidence"]["via"] == {
        "relay": {"pid": 300, "comm": "proxy"},
        "connection": {"sandbox": "sandbox-a", "pid": 42, "comm": "python3", "daddr": "127.0.0.1", "dport": 8080}}


def test_the_relay_may_be_a_parent_of_the_alerting_process(tmp_path):
    relays = RelayIndex(proc_with_relay(tmp_path, pid=200))
    relays.observe(connect())
    alert = relays.attribute(host_alert(pid=301, ancestry=[{"pid": 200, "comm": "sshd"}]))
    assert alert["evidence"]["via"]["relay"] == {"pid": 200, "comm": "sshd"}


def test_no_sandbox_connection_no_loopback_or_no_socket_changes_nothing(tmp_path):
    root = proc_with_relay(tmp_path, inodes=(5003,))
    relays = RelayIndex(root)
    relays.observe(connect(sandbox="host"))
    relays.observe(connect(daddr="10.0.0.1"))
    assert relays.attribute(host_alert())["sandbox"]["name"] == "host"
    relays.observe(connect())
    assert relays.attribute(host_alert())["sandbox"]["name"] == "host"  # holds port 50000 only


def test_a_sandbox_alert_is_left_alone_and_old_connections_expire(tmp_path):
    now = [0.0]
    relays = RelayIndex(proc_with_relay(tmp_path), ttl_s=60, clock=lambda: now[0])
    relays.observe(connect())
    own = {**host_alert(), "sandbox": {"name": "sandbox-b"}}
    assert relays.attribute(own) is own
    now[0] = 61
    assert relays.attribute(host_alert())["sandbox"]["name"] == "host"


def test_the_ports_remembered_are_bounded(tmp_path):
    relays = RelayIndex(proc_with_relay(tmp_path), max_ports=2)
    for port in (1, 2, 3, 8080):
        relays.observe(connect(dport=port))
    assert list(relays._by_port) == [3, 8080]
