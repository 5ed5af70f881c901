"""Python mirror of bpf/events.h, and decoding of raw ring-buffer records.

The constants and enums are read from the header itself, so they are declared once. The
struct layouts are mirrored here as data (field name, struct code) and checked against the
compiled header by tests/unit/test_event_layout.py. Decoding uses `struct` on a memoryview:
bcc's `table.event()` cannot decode 2-D arrays (argv) and its ctypes casts cost more.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional, Union


def probe_dir() -> Path:
    """The probe sources: bpf/ of the repository, installed as the package ebpfguard.bpf
    (pyproject.toml maps it there), so wheels and editable installs alike carry it. A real
    directory, as bcc compiles the probes with -I."""
    try:
        return Path(str(resources.files("ebpfguard.bpf")))
    except ModuleNotFoundError as exc:  # an editable install made before the mapping existed
        raise ImportError("the probe sources (ebpfguard.bpf) are not installed: reinstall "
                          "ebpfguard (scripts/setup.sh, or pip install .)") from exc


BPF_DIR = probe_dir()
HEADER_FILE = BPF_DIR / "events.h"


def read_header_constants(text: str) -> dict[str, int]:
    """The integer #defines and enum members of a C header."""
    constants: dict[str, int] = {}
    for name, value in re.findall(r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M):
        constants[name] = int(value, 0)
    for body in re.findall(r"enum\s+\w+\s*{([^}]*)}", text):
        for name, value in re.findall(r"(\w+)\s*=\s*(0x[0-9a-fA-F]+|\d+)", body):
            constants[name] = int(value, 0)
    return constants


C = read_header_constants(HEADER_FILE.read_text())


@dataclass(frozen=True)
class Layout:
    """A C struct as an ordered list of (field, struct code); nested structs are inlined
    with a dotted prefix. Codes follow C's natural alignment (`struct` '@'-free, explicit
    '<' with manual padding fields named _pad)."""

    name: str
    fields: tuple[tuple[str, str], ...]

    @property
    def fmt(self) -> str:
        return "<" + "".join(code for _, code in self.fields)

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)

    def offsets(self) -> dict[str, int]:
        """Byte offset of each field, as C would place it."""
        out, pos = {}, 0
        for name, code in self.fields:
            out[name] = pos
            pos += struct.calcsize("<" + code)
        return out


def _nested(prefix: str, layout: Layout) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}.{name}", code) for name, code in layout.fields)


EVENT_HEADER = Layout(
    "event_header",
    (
        ("ktime_ns", "Q"),
        ("cgroup_id", "Q"),
        ("lineage_cgroup_id", "Q"),
        ("kind", "I"),
        ("pid", "I"),
        ("tid", "I"),
        ("uid", "I"),
        ("comm", f"{C['TASK_COMM_LEN']}s"),
    ),
)
EXEC_ARGS_EVENT = Layout(
    "exec_args_event",
    _nested("hdr", EVENT_HEADER)
    + (
        ("argc", "I"),
        ("flags", "I"),
        ("args_size", "I"),
        ("_pad", "I"),
        ("filename", f"{C['FILENAME_LEN']}s"),
        ("args", f"{C['ARGV_BUF_LEN']}s"),
    ),
)
EXEC_EVENT = Layout(
    "exec_event",
    _nested("hdr", EVENT_HEADER)
    + (("retval", "i"), ("flags", "I"), ("stack_argc", "I"), ("stack_size", "I")),
)
EXEC_ARGV_EVENT = Layout(
    "exec_argv_event",
    _nested("hdr", EVENT_HEADER)
    + (("offset", "I"), ("size", "I"), ("data", f"{C['ARGV_STACK_CHUNK']}s")),
)
# Not a record: the key of the kernel's per-cgroup counter maps (held_back, lost_by_cgroup).
CGROUP_COUNT_KEY = Layout("cgroup_count_key", (("cgroup_id", "Q"), ("kind", "I"), ("_pad", "I")))
# bpf/events.h computes it; the header reader takes only literal numbers.
ARGV_STACK_MAX = C["ARGV_STACK_CHUNK"] * C["ARGV_STACK_CHUNKS"]
FORK_EVENT = Layout(
    "fork_event",
    _nested("hdr", EVENT_HEADER) + (("child_pid", "I"), ("_pad", "I"), ("clone_flags", "Q")),
)
EXIT_EVENT = Layout(
    "exit_event",
    _nested("hdr", EVENT_HEADER) + (("exit_code", "i"), ("flags", "I")),
)

SOCKET_EVENT = Layout(
    "socket_event",
    _nested("hdr", EVENT_HEADER) + (("family", "i"), ("type", "i"), ("protocol", "i"), ("retval", "i")),
)
CONNECT_EVENT = Layout(
    "connect_event",
    _nested("hdr", EVENT_HEADER)
    + (
        ("sock_cookie", "Q"),
        ("netns_cookie", "Q"),
        ("family", "H"),
        ("dport", "H"),
        ("retval", "i"),
        ("daddr", "16s"),
        ("flags", "I"),
        ("_pad", "I"),
    ),
)

FLOW_EVENT = Layout(
    "flow_event",
    _nested("hdr", EVENT_HEADER)
    + (
        ("sock_cookie", "Q"),
        ("payload_len", "I"),
        ("captured", "I"),
        ("family", "H"),
        ("dport", "H"),
        ("sport", "H"),
        ("direction", "B"),
        ("protocol", "B"),
        ("seq", "B"),
        ("flags", "B"),
        ("_pad", "H"),
        ("_pad2", "I"),
        ("daddr", "16s"),
        ("payload", f"{C['FLOW_PAYLOAD_MAX']}s"),
    ),
)

OPEN_EVENT = Layout(
    "open_event",
    _nested("hdr", EVENT_HEADER)
    + (("retval", "i"), ("flags", "I"), ("filename", f"{C['OPEN_PATH_LEN']}s")),
)

GUARD_EVENT = Layout(
    "guard_event",
    _nested("hdr", EVENT_HEADER)
    + (
        ("what", "I"),
        ("target_pid", "i"),
        ("arg", "Q"),
        ("aux", "q"),
        ("target_cgroup_id", "Q"),
        ("target_lineage_cgroup_id", "Q"),
        ("path", f"{C['GUARD_PATH_LEN']}s"),
        ("detail", f"{C['GUARD_DETAIL_LEN']}s"),
    ),
)

LAYOUTS = (GUARD_EVENT, EVENT_HEADER, EXEC_ARGS_EVENT, EXEC_EVENT, EXEC_ARGV_EVENT, CGROUP_COUNT_KEY, FORK_EVENT, EXIT_EVENT, SOCKET_EVENT, CONNECT_EVENT,
           FLOW_EVENT, OPEN_EVENT)


# Records are built once per ring-buffer record and never changed: plain slotted dataclasses,
# since a frozen one's __init__ costs several times more (a setattr call per field).
@dataclass(slots=True)
class Header:
    """What every record carries: when, where (cgroup) and who."""

    ktime_ns: int
    cgroup_id: int
    pid: int
    tid: int
    uid: int
    comm: bytes
    # The cgroup the process's lineage entered a sandbox at (0: not sandboxed): the process
    # belongs to that sandbox wherever it is now.
    lineage_cgroup_id: int = 0


@dataclass(slots=True)
class ExecArgsRecord:
    """What an exec asked for, sent at syscall entry."""

    hdr: Header
    filename: bytes
    argv: tuple[bytes, ...]
    argv_truncated: bool
    filename_truncated: bool
    via_execveat: bool
    argv_unreadable: bool = False
    filename_unreadable: bool = False


@dataclass(slots=True)
class ExecRecord:
    """An exec's result, sent at syscall exit (in the new program, when it succeeded).

    With `stack_argv`, the new image's argv was read from its stack and sent just before, in
    ExecArgvRecords holding `stack_size` bytes of `stack_argc` NUL-terminated strings."""

    hdr: Header
    retval: int
    stack_argv: bool = False
    stack_argc: int = 0
    stack_size: int = 0
    stack_truncated: bool = False
    stack_unreadable: bool = False
    stack_held_back: bool = False  # the cgroup's budget for stack reads was spent


@dataclass(slots=True)
class ExecArgvRecord:
    """A piece of the new image's argv strings, read from its stack at execve's exit."""

    hdr: Header
    offset: int
    data: bytes


@dataclass(slots=True)
class ForkRecord:
    hdr: Header
    child_pid: int
    clone_flags: int


@dataclass(slots=True)
class ExitRecord:
    hdr: Header
    exit_code: Optional[int]


@dataclass(slots=True)
class SocketRecord:
    hdr: Header
    family: int
    type: int
    protocol: int
    retval: int


@dataclass(slots=True)
class ConnectRecord:
    hdr: Header
    sock_cookie: int
    netns_cookie: int
    family: int
    daddr: bytes  # 4 bytes for AF_INET, 16 for AF_INET6
    dport: int
    retval: int
    in_syscall: bool = True  # False: made outside connect(2) (io_uring), so no result is known


@dataclass(slots=True)
class FlowRecord:
    """The first bytes of one data segment (or one DNS packet) of a flow."""

    hdr: Header  # the socket's creator; pid 0 when owner_known is False
    sock_cookie: int
    owner_known: bool
    egress: bool
    protocol: int
    family: int
    daddr: bytes  # the remote address, in either direction
    dport: int    # the remote port
    sport: int    # the local port
    seq: int
    payload_len: int
    payload: bytes


@dataclass(slots=True)
class OpenRecord:
    """An open of a GPU or accelerator device node."""

    hdr: Header
    retval: int
    flags: int
    filename: bytes


# guard_event.what, by name (the enum guard_what of events.h, lower-cased, prefix dropped).
GUARD_WHAT: dict[int, str] = {
    value: name.split("_", 1)[1].lower()
    for name, value in C.items() if name.startswith(("ESCAPE_", "TAMPER_"))
}


@dataclass(slots=True)
class GuardRecord:
    """An escape or tamper attempt by a sandboxed process (`escape` tells which family)."""

    hdr: Header
    escape: bool
    what: str            # GUARD_WHAT: cgroup_move, setns, bpf, signal, ...
    target_pid: int
    arg: int
    aux: int
    target_cgroup_id: int
    target_lineage_cgroup_id: int
    path: bytes
    detail: bytes


Record = Union[GuardRecord, OpenRecord, FlowRecord, ExecArgsRecord, ExecRecord, ExecArgvRecord, ForkRecord, ExitRecord, SocketRecord, ConnectRecord]


class DecodeError(ValueError):
    """A ring-buffer record that does not match any layout."""


_HEADER = struct.Struct(EVENT_HEADER.fmt)
# exec_args_event arrives cut to its used length: unpack its fixed part, then the args.
_EXEC_ARGS_FIXED = struct.Struct(EXEC_ARGS_EVENT.fmt[: -len(f"{C['ARGV_BUF_LEN']}s")])
_EXEC = struct.Struct(EXEC_EVENT.fmt)
# exec_argv_event arrives cut to its used length too.
_EXEC_ARGV_FIXED = struct.Struct(EXEC_ARGV_EVENT.fmt[: -len(f"{C['ARGV_STACK_CHUNK']}s")])
_FORK = struct.Struct(FORK_EVENT.fmt)
_EXIT = struct.Struct(EXIT_EVENT.fmt)
_SOCKET = struct.Struct(SOCKET_EVENT.fmt)
_CONNECT = struct.Struct(CONNECT_EVENT.fmt)
_OPEN = struct.Struct(OPEN_EVENT.fmt)
_GUARD = struct.Struct(GUARD_EVENT.fmt)
# flow_event arrives cut to its captured bytes, like exec_args_event.
_FLOW_FIXED = struct.Struct(FLOW_EVENT.fmt[: -len(f"{C['FLOW_PAYLOAD_MAX']}s")])
_AF_INET = 2


def _cstr(raw: bytes) -> bytes:
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _unpack(layout: struct.Struct, data: bytes, what: str) -> tuple:
    if len(data) < layout.size:
        raise DecodeError(f"{what} record of {len(data)} bytes, want {layout.size}")
    return layout.unpack_from(data, 0)


# Every record's layout starts with the header's eight fields: ktime, cgroup, lineage cgroup,
# kind, pid, tid, uid, comm. Decoders index the unpacked tuple (this runs for every record).
_FIELDS_AFTER_HEADER = 8


def _header(f: tuple) -> Header:
    comm = f[7]
    end = comm.find(b"\0")
    return Header(f[0], f[1], f[4], f[5], f[6], comm if end < 0 else comm[:end], f[2])


_ARGV_BUF_LEN, _ARGV_MAX_ARGS = C["ARGV_BUF_LEN"], C["ARGV_MAX_ARGS"]
_ARGV_TRUNCATED, _FILENAME_TRUNCATED = C["EXEC_ARGV_TRUNCATED"], C["EXEC_FILENAME_TRUNCATED"]
_VIA_EXECVEAT, _ARGV_UNREADABLE = C["EXEC_VIA_EXECVEAT"], C["EXEC_ARGV_UNREADABLE"]
_FILENAME_UNREADABLE = C["EXEC_FILENAME_UNREADABLE"]
_STACK_ARGV, _STACK_TRUNCATED = C["EXEC_STACK_ARGV"], C["EXEC_STACK_TRUNCATED"]
_STACK_UNREADABLE, _STACK_HELD_BACK = C["EXEC_STACK_UNREADABLE"], C["EXEC_STACK_HELD_BACK"]
_EXEC_ARGS_AT = _EXEC_ARGS_FIXED.size


def _exec_args(data: bytes) -> ExecArgsRecord:
    f = _unpack(_EXEC_ARGS_FIXED, data, "exec args")
    argc, flags, args_size, filename = f[8], f[9], f[10], f[12]
    end = _EXEC_ARGS_AT + args_size
    if args_size > _ARGV_BUF_LEN or len(data) < end:
        raise DecodeError(f"exec args record of {len(data)} bytes claims {args_size} bytes of args")
    args = data[_EXEC_ARGS_AT:end].split(b"\0")
    end = filename.find(b"\0")
    # Positional, in the record's field order (this runs for every exec).
    return ExecArgsRecord(
        _header(f),
        filename if end < 0 else filename[:end],
        tuple(args[: min(argc, len(args) - 1, _ARGV_MAX_ARGS)]),
        bool(flags & _ARGV_TRUNCATED),
        bool(flags & _FILENAME_TRUNCATED),
        bool(flags & _VIA_EXECVEAT),
        bool(flags & _ARGV_UNREADABLE),
        bool(flags & _FILENAME_UNREADABLE),
    )


def _exec(data: bytes) -> ExecRecord:
    f = _unpack(_EXEC, data, "exec")
    retval, flags, stack_argc, stack_size = f[8:12]
    return ExecRecord(
        _header(f), retval, bool(flags & _STACK_ARGV), stack_argc, stack_size,
        bool(flags & _STACK_TRUNCATED), bool(flags & _STACK_UNREADABLE), bool(flags & _STACK_HELD_BACK),
    )


def _exec_argv(data: bytes) -> ExecArgvRecord:
    f = _unpack(_EXEC_ARGV_FIXED, data, "exec argv")
    offset, size = f[8], f[9]
    end = _EXEC_ARGV_FIXED.size + size
    if size > C["ARGV_STACK_CHUNK"] or len(data) < end or offset + size > ARGV_STACK_MAX:
        raise DecodeError(f"exec argv record of {len(data)} bytes claims {size} bytes at {offset}")
    return ExecArgvRecord(_header(f), offset, data[_EXEC_ARGV_FIXED.size : end])


def _fork(data: bytes) -> ForkRecord:
    f = _unpack(_FORK, data, "fork")
    return ForkRecord(_header(f), f[8], f[10])


def _exit(data: bytes) -> ExitRecord:
    f = _unpack(_EXIT, data, "exit")
    return ExitRecord(_header(f), f[8] if f[9] & C["EXIT_HAS_CODE"] else None)


def _socket(data: bytes) -> SocketRecord:
    f = _unpack(_SOCKET, data, "socket")
    return SocketRecord(_header(f), f[8], f[9], f[10], f[11])


_CONNECT_OUTSIDE_SYSCALL = C["CONNECT_OUTSIDE_SYSCALL"]


def _connect(data: bytes) -> ConnectRecord:
    f = _unpack(_CONNECT, data, "connect")
    cookie, netns, family, dport, retval, daddr, flags = f[8:15]
    return ConnectRecord(_header(f), cookie, netns, family,
                         daddr[:4] if family == _AF_INET else daddr, dport, retval,
                         in_syscall=not flags & _CONNECT_OUTSIDE_SYSCALL)


def _flow(data: bytes) -> FlowRecord:
    f = _unpack(_FLOW_FIXED, data, "flow")
    (cookie, payload_len, captured, family, dport, sport, direction, protocol, seq,
     flags, _pad, _pad2, daddr) = f[8:21]
    end = _FLOW_FIXED.size + captured
    if captured > C["FLOW_PAYLOAD_MAX"] or len(data) < end:
        raise DecodeError(f"flow record of {len(data)} bytes claims {captured} captured bytes")
    return FlowRecord(
        _header(f), cookie, not flags & C["FLOW_OWNER_UNKNOWN"],
        direction == C["FLOW_EGRESS"], protocol, family,
        daddr[:4] if family == _AF_INET else daddr, dport, sport, seq, payload_len,
        data[_FLOW_FIXED.size : end],
    )


def _open(data: bytes) -> OpenRecord:
    f = _unpack(_OPEN, data, "open")
    return OpenRecord(_header(f), f[8], f[9], _cstr(f[10]))


def _guard(data: bytes) -> GuardRecord:
    f = _unpack(_GUARD, data, "guard")
    what, target_pid, arg, aux, target_cgroup, target_lineage, path, detail = f[8:16]
    return GuardRecord(_header(f), f[3] == C["EVENT_ESCAPE"], GUARD_WHAT.get(what, str(what)),
                       target_pid, arg, aux, target_cgroup, target_lineage, _cstr(path), _cstr(detail))


# One decoder per record kind of events.h, like the agent's dispatch table.
DECODERS: dict[int, Callable[[bytes], Record]] = {
    C["EVENT_EXEC_ARGS"]: _exec_args,
    C["EVENT_EXEC"]: _exec,
    C["EVENT_EXEC_ARGV"]: _exec_argv,
    C["EVENT_FORK"]: _fork,
    C["EVENT_EXIT"]: _exit,
    C["EVENT_SOCKET"]: _socket,
    C["EVENT_CONNECT"]: _connect,
    C["EVENT_FLOW"]: _flow,
    C["EVENT_OPEN"]: _open,
    C["EVENT_ESCAPE"]: _guard,
    C["EVENT_TAMPER"]: _guard,
}


_KIND = struct.Struct("<I")
_KIND_AT = EVENT_HEADER.offsets()["kind"]


def decode(data: Union[bytes, memoryview]) -> Record:
    """Decode one ring-buffer record; DecodeError if it is not one of ours."""
    if type(data) is not bytes:
        data = bytes(data)
    if len(data) < _HEADER.size:
        raise DecodeError(f"event record of {len(data)} bytes, want {_HEADER.size}")
    kind = _KIND.unpack_from(data, _KIND_AT)[0]
    decoder = DECODERS.get(kind)
    if decoder is None:
        raise DecodeError(f"unknown event kind {kind}")
    return decoder(data)
