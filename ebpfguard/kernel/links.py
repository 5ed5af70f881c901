"""Cgroup BPF attachments that cannot outlive the agent.

bcc's attach_func() uses BPF_PROG_ATTACH, which pins a program to a cgroup until someone
detaches it: seen here, a connect4 program stayed on the root cgroup after its process
died. A BPF link (bpf_link_create, from the libbpf that libbcc loads) detaches when its last
file descriptor closes, so a SIGKILLed agent leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import functools
import os
import platform
import struct
from dataclasses import dataclass

BPF_PROG_QUERY = 16
SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    # find_library runs ldconfig: once, not at every periodic attachment check.
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _libbpf() -> ctypes.CDLL:
    from bcc import libbcc  # libbcc links libbpf: its bpf_link_create is reachable through it

    lib = libbcc.lib
    lib.bpf_link_create.restype = ctypes.c_int
    lib.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    return lib


@dataclass
class CgroupLink:
    """One program linked to one cgroup; close() (or process death) detaches it."""

    fd: int
    cgroup: str
    attach_type: int

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def link_to_cgroup(prog_fd: int, cgroup_path: str, attach_type: int) -> CgroupLink:
    """Attach a loaded cgroup program to `cgroup_path` through a BPF link."""
    cgroup_fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _libbpf().bpf_link_create(prog_fd, cgroup_fd, attach_type, None)
    finally:
        os.close(cgroup_fd)
    if fd < 0:
        raise OSError(-fd, f"bpf_link_create on {cgroup_path} (attach type {attach_type}): {os.strerror(-fd)}")
    return CgroupLink(fd, cgroup_path, attach_type)


MAX_QUERIED_PROGRAMS = 64


class _ProgQueryAttr(ctypes.Structure):
    """union bpf_attr's `query` member (BPF_PROG_QUERY), padded to the union's size."""

    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                ("_pad", ctypes.c_uint32 * 16)]


class _ProgramQuery:
    """BPF_PROG_QUERY with its attribute and id buffer made once, reused for every query."""

    def __init__(self) -> None:
        self.ids = (ctypes.c_uint32 * MAX_QUERIED_PROGRAMS)()
        self.attr = _ProgQueryAttr()
        self._attr_ref = ctypes.byref(self.attr)
        self._attr_size = ctypes.sizeof(self.attr)

    def __call__(self, cgroup_fd: int, attach_type: int, what: str) -> list[int]:
        attr = self.attr
        attr.target_fd, attr.attach_type, attr.query_flags = cgroup_fd, attach_type, 0
        attr.prog_ids, attr.prog_cnt = ctypes.addressof(self.ids), MAX_QUERIED_PROGRAMS
        if _libc().syscall(SYS_BPF, BPF_PROG_QUERY, self._attr_ref, self._attr_size) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF_PROG_QUERY on {what}: {os.strerror(err)}")
        return self.ids[: min(attr.prog_cnt, MAX_QUERIED_PROGRAMS)]


def attached_program_ids(cgroup_path: str, attach_type: int) -> list[int]:
    """IDs of the programs attached to a cgroup for one attach type (BPF_PROG_QUERY)."""
    cgroup_fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return _ProgramQuery()(cgroup_fd, attach_type, cgroup_path)
    finally:
        os.close(cgroup_fd)


BPF_OBJ_GET_INFO_BY_FD = 15
# _IOWR('$', 10, struct perf_event_query_bpf *): the programs attached to a tracepoint event.
PERF_EVENT_IOC_QUERY_BPF = 0xC008240A


def _bpf_syscall(cmd: int, attr: ctypes.Structure, what: str) -> None:
    if _libc().syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def program_id(prog_fd: int) -> int:
    """The kernel's id of a loaded program (BPF_OBJ_GET_INFO_BY_FD; bpf_prog_info.id)."""
    info = (ctypes.c_uint8 * 256)()

    class InfoAttr(ctypes.Structure):
        _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32), ("info", ctypes.c_uint64)]

    attr = InfoAttr(bpf_fd=prog_fd, info_len=len(info), info=ctypes.addressof(info))
    _bpf_syscall(BPF_OBJ_GET_INFO_BY_FD, attr, f"BPF_OBJ_GET_INFO_BY_FD on fd {prog_fd}")
    return int.from_bytes(bytes(info[4:8]), "little")  # struct bpf_prog_info: type, then id


def tracepoint_program_ids(perf_fd: int, buf: bytearray) -> list[int]:
    """IDs of the programs attached to the tracepoint event a perf event fd is open on
    (`buf`: a reused buffer of 8 + 4 * MAX_QUERIED_PROGRAMS bytes)."""
    struct.pack_into("<I", buf, 0, MAX_QUERIED_PROGRAMS)  # ids_len
    fcntl.ioctl(perf_fd, PERF_EVENT_IOC_QUERY_BPF, buf)
    count = min(struct.unpack_from("<I", buf, 4)[0], MAX_QUERIED_PROGRAMS)
    return list(struct.unpack_from(f"<{count}I", buf, 8))


class AttachmentCheck:
    """Whether each family's programs are still attached where the agent attached them: one
    BPF_PROG_QUERY per cgroup and attach type, one PERF_EVENT_IOC_QUERY_BPF per tracepoint.
    The cgroup's descriptor and the query buffers are made once: an idle agent runs this
    check at every housekeeping wakeup, and on a VM each page such a wakeup touches costs
    (docs/performance.md, "Idle")."""

    def __init__(self) -> None:
        self._cgroup_fds: dict[str, int] = {}
        # (cgroup path, descriptor, attach type) -> [(family, program id)]
        self._cgroup: dict[tuple[str, int, int], list[tuple[str, int]]] = {}
        self._tracepoints: list[tuple[str, int, int]] = []  # (family, program id, perf fd)
        self._query = _ProgramQuery()
        self._buf = bytearray(8 + 4 * MAX_QUERIED_PROGRAMS)

    def add_cgroup_link(self, family: str, prog_id: int, link: CgroupLink) -> None:
        """Check that `prog_id` stays attached to the link's cgroup for its attach type."""
        fd = self._cgroup_fds.get(link.cgroup)
        if fd is None:
            fd = self._cgroup_fds[link.cgroup] = os.open(link.cgroup, os.O_RDONLY | os.O_DIRECTORY)
        self._cgroup.setdefault((link.cgroup, fd, link.attach_type), []).append((family, prog_id))

    def add_tracepoint(self, family: str, prog_id: int, perf_fd: int) -> None:
        """Check that `prog_id` stays attached to the tracepoint `perf_fd` is open on."""
        self._tracepoints.append((family, prog_id, perf_fd))

    def attached(self, families: tuple[str, ...]) -> dict[str, bool]:
        """Each family: True while every program it attached is still attached (a query
        that fails counts as detached)."""
        out = dict.fromkeys(families, True)
        for (path, fd, attach_type), programs in self._cgroup.items():
            try:
                present = set(self._query(fd, attach_type, path))
            except OSError:
                present = set()
            for family, prog_id in programs:
                if prog_id not in present:
                    out[family] = False
        for family, prog_id, perf_fd in self._tracepoints:
            try:
                if prog_id not in tracepoint_program_ids(perf_fd, self._buf):
                    out[family] = False
            except OSError:
                out[family] = False
        return out

    def close(self) -> None:
        """Close the cgroups' descriptors."""
        for fd in self._cgroup_fds.values():
            os.close(fd)
        self._cgroup_fds.clear()
        self._cgroup.clear()
