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
    C, ConnectRecord, ExecArgsRecord, ExecArgvRecord, ExecRecord, ExitRecord, FlowRecord, ForkRecord, Header, OpenRecord,
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


def test_envelope_of_a_process_follows_its_exec_comm_and_uid_between_events(env):
    envelope, procs = env["envelope"], env["procs"]
    assert envelope.about_process("connect", hdr(env))["process"]["comm"] == "sh"
    procs.on_exec(100, "xmrig", "/tmp/xmrig", ("xmrig", "-o", "pool:3333"))
    after_exec = envelope.about_process("connect", hdr(env))
    assert after_exec["process"]["exe"] == "/tmp/xmrig"
    assert after_exec["process"]["argv"] == ["xmrig", "-o", "pool:3333"]
    renamed = envelope.about_process("connect", hdr(env, comm=b"kworker"))
    assert renamed["process"]["comm"] == "kworker"
    setuid = envelope.about_process("connect", Header(KTIME, env["sandbox_id"], 100, 100, 0, b"kworker"))
    assert setuid["process"]["uid"] == 0
    assert envelope.about_process("connect", hdr(env))["process"]["argv"] == ["xmrig", "-o", "pool:3333"]


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


def stack_pieces(join, pid, argv, chunk=8, limit=None):
    """Feeds argv to the join as the kernel sends it from the stack: in pieces of `chunk` bytes,
    cut at `limit` bytes."""
    data = b"".join(a + b"\0" for a in argv)[:limit]
    for offset in range(0, len(data), chunk):
        join.on_exec_argv(ExecArgvRecord(Header(KTIME, 0, pid, pid, 0, b""), offset, data[offset:offset + chunk]))
    return len(data)


def test_exec_join_takes_argv_read_from_the_stack_over_what_entry_could_read(env):
    join = ExecJoin(env["envelope"])
    full = (b"miner", *([b""] * 70), b"-o", b"stratum+tcp://pool.example.net:3333")
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"/tmp/miner", full[:64], True, False, False))
    size = stack_pieces(join, 200, full)
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_argv=True, stack_argc=len(full), stack_size=size))
    assert event["process"]["argv"] == [a.decode() for a in full]
    assert event["process"]["argv_truncated"] is False
    assert event["argv_source"] == "stack"
    assert event["argv_anomalies"] == ["past_entry_bounds"]


def test_exec_join_never_reads_argv_the_process_could_have_rewritten(env):
    make_proc(env["proc"], 200, 100, "miner", "/tmp/miner", [b"[kworker/0:1]", b"", b""])
    join = ExecJoin(env["envelope"])
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"", (), False, False, False,
                                     argv_unreadable=True, filename_unreadable=True))
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_unreadable=True))
    assert event["process"]["argv"] == [] and "argv" in event["partial"]
    assert event["argv_anomalies"] == ["stack_incomplete", "unreadable_at_entry"]
    assert event["filename"] == "/tmp/miner"  # /proc/<pid>/exe: the kernel's, not the program's


def test_exec_join_flags_argv_changed_between_entry_and_the_new_image(env):
    join = ExecJoin(env["envelope"])
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"/bin/x", (b"x", b"harmless") + (b"a",) * 63,
                                     True, False, False))
    received = (b"x", b"-o", b"stratum+tcp://pool.example.net:3333") + (b"a",) * 63
    size = stack_pieces(join, 200, received)
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_argv=True, stack_argc=len(received), stack_size=size))
    assert "changed_after_entry" in event["argv_anomalies"]


def test_exec_join_accepts_the_interpreter_a_script_puts_in_front(env):
    join = ExecJoin(env["envelope"])
    asked = (b"./run.sh",) + tuple(b"%d" % i for i in range(63))
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"./run.sh", asked, True, False, False))
    received = (b"/bin/sh", b"-e", b"./run.sh") + asked[1:] + (b"tail",)
    size = stack_pieces(join, 200, received)
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_argv=True, stack_argc=len(received), stack_size=size))
    assert event["argv_anomalies"] == ["past_entry_bounds"]
    assert event["process"]["argv"][-1] == "tail"


def test_exec_join_keeps_entry_argv_when_a_stack_piece_was_lost(env):
    join = ExecJoin(env["envelope"])
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"/bin/x", (b"x", b"y"), True, False, False))
    join.on_exec_argv(ExecArgvRecord(Header(KTIME, 0, 200, 200, 0, b""), 0, b"x\0y\0"))
    join.on_exec_argv(ExecArgvRecord(Header(KTIME, 0, 200, 200, 0, b""), 16, b"w\0"))  # 4..16 lost
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_argv=True, stack_argc=4, stack_size=18))
    assert event["process"]["argv"] == ["x", "y"] and event["process"]["argv_truncated"] is True
    assert "stack_incomplete" in event["argv_anomalies"]


def test_exec_join_cuts_a_stack_argv_past_its_bound_and_says_so(env):
    join = ExecJoin(env["envelope"])
    size = stack_pieces(join, 200, (b"x", b"a" * 20), limit=17)
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_argv=True, stack_argc=2, stack_size=size,
                                       stack_truncated=True))
    assert event["process"]["argv"] == ["x", "a" * 15] and event["process"]["argv_truncated"] is True
    assert event["argv_anomalies"] == ["truncated"]


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


def test_exec_join_accepts_each_long_argument_entry_cut_to_its_read_bound(env):
    join = ExecJoin(env["envelope"])
    cut = C["ARGV_ARG_READ"] - 1
    received = (b"/bin/true", b"a" * 9000, b"b" * 9000, b"-o", b"pool")
    asked = (b"/bin/true", b"a" * cut, b"b" * cut, b"-o")
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"/bin/true", asked, True, False, False))
    size = stack_pieces(join, 200, received, chunk=4096)
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_argv=True, stack_argc=5, stack_size=size))
    assert event["argv_anomalies"] == ["past_entry_bounds"]


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


def test_exec_join_says_when_the_sandbox_spent_its_stack_read_budget(env):
    join = ExecJoin(env["envelope"])
    asked = (b"/bin/true",) + (b"x" * 4095,) * 4
    join.on_exec_args(ExecArgsRecord(hdr(env, pid=200), b"/bin/true", asked, True, False, False))
    event = join.exec_event(ExecRecord(hdr(env, pid=200), 0, stack_held_back=True))
    assert event["process"]["argv"] == [a.decode() for a in asked] and event["process"]["argv_truncated"] is True
    assert event["argv_anomalies"] == ["past_entry_bounds", "stack_held_back"]
