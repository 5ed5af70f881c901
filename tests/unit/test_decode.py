"""Decoding raw ring-buffer records, built here byte by byte as the kernel lays them out."""

import struct

import pytest

from ebpfguard.kernel import events
from ebpfguard.kernel.events import (
    C, DecodeError, ExecArgsRecord, ExecArgvRecord, ExecRecord, ExitRecord, FlowRecord, ForkRecord, GuardRecord,
    decode,
)


def header(kind, pid=4242, comm=b"xmrig", lineage=0):
    return struct.pack(events.EVENT_HEADER.fmt, 123456789, 777, lineage, kind, pid, pid + 1, 1000, comm)


def exec_args_record(argv, filename=b"/usr/bin/x", flags=0):
    """As the kernel sends it: cut to the bytes of args actually used."""
    args = b"".join(a + b"\0" for a in argv)
    fixed = struct.pack("<IIII", len(argv), flags, len(args), 0)
    return header(C["EVENT_EXEC_ARGS"]) + fixed + filename.ljust(C["FILENAME_LEN"], b"\0") + args


def test_exec_args_record_decodes_argv_exactly_including_empty_and_non_utf8():
    argv = (b"xmrig", b"", b"-o", b"\xff\xfe pool")
    rec = decode(exec_args_record(argv))
    assert isinstance(rec, ExecArgsRecord)
    assert rec.argv == argv
    assert rec.filename == b"/usr/bin/x"
    assert rec.hdr.pid == 4242 and rec.hdr.cgroup_id == 777 and rec.hdr.comm == b"xmrig"
    assert not rec.argv_truncated


def test_exec_args_flags_and_exec_result():
    flags = C["EXEC_ARGV_TRUNCATED"] | C["EXEC_VIA_EXECVEAT"]
    rec = decode(exec_args_record((b"a",), flags=flags))
    assert rec.argv_truncated and rec.via_execveat
    result = decode(header(C["EVENT_EXEC"]) + struct.pack("<iIII", -2, 0, 0, 0))
    assert isinstance(result, ExecRecord) and result.retval == -2 and not result.stack_argv


def test_exec_result_says_argv_follows_from_the_stack():
    flags = C["EXEC_STACK_ARGV"] | C["EXEC_STACK_TRUNCATED"]
    result = decode(header(C["EVENT_EXEC"]) + struct.pack("<iIII", 0, flags, 74, 9000))
    assert result.stack_argv and result.stack_truncated and not result.stack_unreadable
    assert (result.stack_argc, result.stack_size) == (74, 9000)


def exec_argv_record(offset, data):
    return header(C["EVENT_EXEC_ARGV"]) + struct.pack("<II", offset, len(data)) + data


def test_exec_argv_piece_decodes_its_bytes_and_offset():
    rec = decode(exec_argv_record(8192, b"-o\0stratum+tcp://x:3333\0"))
    assert isinstance(rec, ExecArgvRecord)
    assert rec.offset == 8192 and rec.data == b"-o\0stratum+tcp://x:3333\0"


@pytest.mark.parametrize("offset, size", [(0, C["ARGV_STACK_CHUNK"] + 1), (events.ARGV_STACK_MAX, 1)])
def test_exec_argv_piece_past_its_bounds_is_rejected(offset, size):
    raw = header(C["EVENT_EXEC_ARGV"]) + struct.pack("<II", offset, size) + b"a" * size
    with pytest.raises(DecodeError):
        decode(raw)


def test_exec_args_record_claiming_more_bytes_than_it_has_is_rejected():
    raw = bytearray(exec_args_record((b"abc",)))
    struct.pack_into("<I", raw, events.EVENT_HEADER.size + 8, 9999)
    with pytest.raises(DecodeError):
        decode(bytes(raw))


def test_fork_and_exit_records():
    fork = decode(header(C["EVENT_FORK"]) + struct.pack("<IIQ", 99, 0, 0x11))
    assert isinstance(fork, ForkRecord) and fork.child_pid == 99 and fork.clone_flags == 0x11
    code = decode(header(C["EVENT_EXIT"]) + struct.pack("<iI", 3, C["EXIT_HAS_CODE"]))
    killed = decode(header(C["EVENT_EXIT"]) + struct.pack("<iI", 0, 0))
    assert isinstance(code, ExitRecord) and code.exit_code == 3
    assert killed.exit_code is None


@pytest.mark.parametrize(
    "raw",
    [b"", b"\0" * 10, header(C["EVENT_EXEC"]), header(99) + b"\0" * 64],
    ids=["empty", "short", "truncated-exec", "unknown-kind"],
)
def test_malformed_records_raise_decode_error(raw):
    with pytest.raises(DecodeError):
        decode(raw)


def flow_record(payload, flags=0, direction=0, seq=0, family=2, daddr=b"\x7f\x00\x00\x01"):
    fixed = struct.pack("<QIIHHHBBBBHI16s", 99, len(payload) + 100, len(payload), family, 3333, 40000,
                        direction, 6, seq, flags, 0, 0, daddr.ljust(16, b"\0"))
    return header(C["EVENT_FLOW"]) + fixed + payload


def test_flow_record_carries_the_remote_end_and_the_captured_bytes():
    rec = decode(flow_record(b'{"id":1,"method":"login"}\n', direction=C["FLOW_INGRESS"], seq=2))
    assert isinstance(rec, FlowRecord)
    assert (rec.daddr, rec.dport, rec.sport, rec.seq) == (b"\x7f\x00\x00\x01", 3333, 40000, 2)
    assert rec.payload == b'{"id":1,"method":"login"}\n' and rec.payload_len == len(rec.payload) + 100
    assert not rec.egress and rec.owner_known and rec.sock_cookie == 99


def test_flow_record_of_an_unknown_owner_and_ipv6():
    addr = bytes(range(16))
    rec = decode(flow_record(b"x", flags=C["FLOW_OWNER_UNKNOWN"], family=10, daddr=addr))
    assert not rec.owner_known and rec.daddr == addr


def test_flow_record_claiming_more_bytes_than_it_has_is_rejected():
    with pytest.raises(DecodeError):
        decode(flow_record(b"abc")[:-1])


def connect_record(flags=0):
    fixed = struct.pack("<QQHHi16sII", 5, 7, 2, 443, -115, b"\x0a\x00\x00\x01".ljust(16, b"\0"), flags, 0)
    return header(C["EVENT_CONNECT"]) + fixed


def test_connect_record_from_a_syscall_and_from_outside_one():
    rec = decode(connect_record())
    assert (rec.daddr, rec.dport, rec.retval, rec.in_syscall) == (b"\x0a\x00\x00\x01", 443, -115, True)
    assert decode(connect_record(C["CONNECT_OUTSIDE_SYSCALL"])).in_syscall is False


def test_every_record_kind_of_the_header_has_a_decoder():
    kinds = {value for name, value in C.items() if name.startswith("EVENT_")}
    assert kinds == set(events.DECODERS)


def test_every_header_carries_the_lineage_cgroup_beside_the_current_one():
    rec = decode(header(C["EVENT_EXEC"], lineage=555) + struct.pack("<iIII", 0, 0, 0, 0))
    assert rec.hdr.cgroup_id == 777 and rec.hdr.lineage_cgroup_id == 555


def guard_record(kind, what, path=b"", detail=b"", target_pid=0, arg=0, aux=0, target=0, target_lineage=0):
    return header(kind, lineage=555) + struct.pack(
        "<IiQqQQ", C[what], target_pid, arg, aux, target, target_lineage
    ) + path.ljust(C["GUARD_PATH_LEN"], b"\0") + detail.ljust(C["GUARD_DETAIL_LEN"], b"\0")


def test_an_escape_record_says_which_attempt_and_where_to():
    rec = decode(guard_record(C["EVENT_ESCAPE"], "ESCAPE_CGROUP_MOVE", path=b"/", target_pid=77, target=1,
                              target_lineage=555))
    assert isinstance(rec, GuardRecord) and rec.escape
    assert (rec.what, rec.target_pid, rec.target_cgroup_id, rec.target_lineage_cgroup_id, rec.path) == \
        ("cgroup_move", 77, 1, 555, b"/")


def test_a_tamper_record_keeps_its_signed_arguments():
    rec = decode(guard_record(C["EVENT_TAMPER"], "TAMPER_SIGNAL", target_pid=-1, aux=9))
    assert not rec.escape and rec.what == "signal" and rec.target_pid == -1 and rec.aux == 9
