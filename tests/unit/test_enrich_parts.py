"""The enricher's parts, each with its environment passed in: a cgroup tree and a /proc tree
made in a temporary directory, a fixed clock, a given host network-namespace cookie."""

from __future__ import annotations

import socket
import struct

import pytest

from ebpfguard.config import load_config
from ebpfguard.enrich.devices import DeviceEvents
from ebpfguard.enrich.envelope import EventEnvelope
from ebpfguard.enrich.exec_join import ExecJoin
from ebpfguard.enrich.network import NetworkEvents
from ebpfguard.enrich.sandbox_cache import SandboxCache
from ebpfguard.kernel.events import (
    ConnectRecord, ExecArgsRecord, ExecRecord, ExitRecord, FlowRecord, ForkRecord, Header, OpenRecord,
    SocketRecord,
)

from enrich_env import HOST_NETNS, KTIME, FixedClock, fake_host, make_proc


@pytest.fixture
def env(tmp_path):
    host = fake_host(tmp_path)
    envelope = EventEnvelope("node-1", host.procs, SandboxCache(host.index, load_config()["sandbox"]), FixedClock())
    return {"cgroups": host.cgroups, "proc": host.proc, "procs": host.procs, "index": host.index,
            "envelope": envelope, "sandbox_id": host.sandbox_id, "host": host}


def hdr(env, pid=100, comm=b"sh", cgroup_id=None):
    return Header(KTIME, env["sandbox_id"] if cgroup_id is None else cgroup_id, pid, pid, 1000, comm)


def test_envelope_names_the_outermost_sandbox_and_the_ancestry_from_proc(env):
    event = env["envelope"].about_process("exit", hdr(env))
    assert event["sandbox"]["name"] == "sandbox-a"
    assert event["sandbox"]["cgroup"] == "/sandbox-a/inner"
    assert event["process"]["ppid"] == 1
    assert event["process"]["ancestry"] == [{"pid": 1, "comm": "init", "exe": "/sbin/init"}]
    assert event["time"] == "1970-01-01T00:00:01.000000000Z"
    assert event["node"] == "node-1"


def test_envelope_lists_an_unresolvable_cgroup_as_partial_not_host(env):
    event = env["envelope"].about_process("exit", hdr(env, cgroup_id=999_999_999))
    assert event["sandbox"]["name"] == "unknown"
    assert "sandbox" in event["partial"]


def test_sandbox_cache_answers_again_only_after_its_time_to_live(env):
    now = [0]
    cache = SandboxCache(env["index"], load_config()["sandbox"], ttl_ns=10, now_ns=lambda: now[0])
    first, _ = cache.sandbox_of(env["sandbox_id"])
    (env["cgroups"] / "sandbox-a" / "inner").rmdir()
    env["index"]._cache.clear()
    assert cache.sandbox_of(env["sandbox_id"])[0] is first
    now[0] = 11
    assert cache.sandbox_of(env["sandbox_id"])[0]["name"] == "unknown"


def test_exec_join_pairs_arguments_with_the_result_by_pid(env):
    join = ExecJoin(env["envelope"])
    join.on_exec_args(ExecArgsRecord(hdr(env), b"/usr/bin/xmrig", (b"xmrig", b"-o", b"\xffpool"),
                                     False, False, False))
    event = join.exec_event(ExecRecord(hdr(env, comm=b"xmrig"), 0))
    assert event["process"]["argv"] == ["xmrig", "-o", "\\xffpool"]
    assert event["process"]["argv_b64"][2] == "/3Bvb2w="
    assert event["process"]["exe"] == "/usr/bin/xmrig"
    assert env["procs"].lookup(100).comm == "xmrig"


def test_exec_join_without_its_arguments_says_so(env):
    event = ExecJoin(env["envelope"]).exec_event(ExecRecord(hdr(env), 0))
    assert {"argv", "filename"} <= set(event["partial"])
    assert event["filename"] is None


def test_exec_join_reads_unreadable_argv_from_the_process_table_proc_root(env):
    make_proc(env["proc"], 200, 100, "miner", "/tmp/miner", [b"miner", b"--donate-level", b"1"])
    join = ExecJoin(env["envelope"])
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"", (), False, False, False,
                                     argv_unreadable=True, filename_unreadable=True))
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0))
    assert event["process"]["argv"] == ["miner", "--donate-level", "1"]
    assert event["argv_source"] == "proc"
    assert event["filename"] == "/tmp/miner"


def test_exec_join_keeps_at_most_its_bound_of_pending_execs(env):
    join = ExecJoin(env["envelope"], max_pending=3)
    for pid in range(10):
        join.on_exec_args(ExecArgsRecord(hdr(env, pid=pid), b"/x", (b"x",), False, False, False))
    assert len(join._pending) == 3


def test_connect_from_the_host_namespace_is_marked_so(env):
    net = NetworkEvents(env["envelope"], HOST_NETNS)
    rec = ConnectRecord(hdr(env), 7, HOST_NETNS, 2, socket.inet_aton("10.1.2.3"), 3333, -111)
    event = net.connect_event(rec)
    assert (event["daddr"], event["dport"], event["retval"], event["host_netns"]) == ("10.1.2.3", 3333, -111, True)
    other = net.connect_event(ConnectRecord(hdr(env), 8, 1, 2, socket.inet_aton("10.1.2.3"), 80, 0))
    assert other["host_netns"] is False


def test_connect_outside_the_syscall_has_no_result(env):
    net = NetworkEvents(env["envelope"], None)
    event = net.connect_event(ConnectRecord(hdr(env), 7, 0, 2, socket.inet_aton("127.0.0.1"), 80, 0,
                                            in_syscall=False))
    assert event["retval"] is None and "retval" in event["partial"]
    assert "host_netns" not in event


def test_socket_event_names_its_arguments(env):
    event = NetworkEvents(env["envelope"], None).socket_event(SocketRecord(hdr(env), 2, 1 | 0x800, 6, 3))
    assert (event["family"], event["type"], event["protocol"]) == ("AF_INET", "SOCK_STREAM", "tcp")


def flow(env, payload, dport=443, sport=40000, owner_known=True, protocol=6):
    return FlowRecord(hdr(env), 55, owner_known, True, protocol, 2, socket.inet_aton("127.0.0.1"),
                      dport, sport, 0, len(payload), payload)


def test_flow_event_carries_its_first_bytes_and_an_unknown_owner_is_partial(env):
    event = NetworkEvents(env["envelope"], None).flow_event(flow(env, b'{"id":1}', owner_known=False))
    assert event["payload_b64"] == "eyJpZCI6MX0="
    assert event["process"]["pid"] is None and "process" in event["partial"]
    assert event["flow_id"] == 55


def test_port_53_becomes_a_dns_event(env):
    query = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x04pool\x07example\x00" + struct.pack("!HH", 1, 1)
    event = NetworkEvents(env["envelope"], None).flow_event(flow(env, query, dport=53, protocol=17))
    assert event["kind"] == "dns"
    assert event["query"] == "pool.example" and event["qtype"] == "A"


def test_open_event_and_gpu_sample_take_their_sandbox_from_the_cgroup(env):
    devices = DeviceEvents(env["envelope"], env["index"])
    opened = devices.open_event(OpenRecord(hdr(env), 3, 2, b"/dev/nvidia0"))
    assert opened["filename"] == "/dev/nvidia0" and opened["sandbox"]["name"] == "sandbox-a"
    sample = devices.gpu_event({"pid": 100, "gpu": "0", "used_memory_bytes": 5}, "/sandbox-a/inner")
    assert sample["sandbox"]["name"] == "sandbox-a"
    assert sample["used_memory_bytes"] == 5
    lost = devices.gpu_event({"pid": 100, "gpu": "0"}, "/gone")
    assert lost["sandbox"]["name"] == "unknown"


def test_enricher_wires_the_parts_fork_exec_exit(env):
    enricher = env["host"].enricher()
    enricher.on_fork(ForkRecord(hdr(env), 300, 0))
    enricher.on_exec_args(ExecArgsRecord(hdr(env, pid=300), b"/bin/ls", (b"ls",), False, False, False))
    event = enricher.exec_event(ExecRecord(hdr(env, pid=300, comm=b"ls"), 0))
    assert event["process"]["ppid"] == 100
    assert [a["pid"] for a in event["process"]["ancestry"]] == [100, 1]
    gone = enricher.exit_event(ExitRecord(hdr(env, pid=300, comm=b"ls"), 0))
    assert gone["exit_code"] == 0
    assert enricher.network.host_netns_cookie == HOST_NETNS


def dns_answer(name: bytes, address: bytes) -> bytes:
    """A DNS response naming one A record (RFC 1035 layout, the name compressed to the question)."""
    question = name + struct.pack("!HH", 1, 1)
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + address
    return struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0) + question + answer


def test_a_flow_says_whether_a_dns_answer_to_its_sandbox_named_its_address(env):
    net = NetworkEvents(env["envelope"], None)
    before = net.flow_event(flow(env, b"\x16\x03\x01\x02\x00\x01"))
    assert before["dns_named"] is False
    response = FlowRecord(hdr(env), 56, True, False, 17, 2, socket.inet_aton("127.0.0.53"), 53, 40001, 0, 0,
                          dns_answer(b"\x04pool\x07example\x00", socket.inet_aton("127.0.0.1")))
    assert net.flow_event(response)["kind"] == "dns"
    after = net.flow_event(flow(env, b"\x16\x03\x01\x02\x00\x01"))
    assert after["dns_named"] is True


def test_named_addresses_are_bounded_the_least_recently_named_forgotten(env):
    net = NetworkEvents(env["envelope"], None, max_named_addresses=1)
    for address in ("10.0.0.1", "127.0.0.1"):
        net.flow_event(FlowRecord(hdr(env), 57, True, False, 17, 2, socket.inet_aton("127.0.0.53"), 53, 40001, 0, 0,
                                  dns_answer(b"\x01x\x00", socket.inet_aton(address))))
    assert net.flow_event(flow(env, b"{}"))["dns_named"] is True  # 127.0.0.1, named last
    to_first = FlowRecord(hdr(env), 58, True, True, 6, 2, socket.inet_aton("10.0.0.1"), 443, 40002, 0, 2, b"{}")
    assert net.flow_event(to_first)["dns_named"] is False
