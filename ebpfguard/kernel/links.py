"""Cgroup BPF attachments that cannot outlive the agent.

bcc's attach_func() uses BPF_PROG_ATTACH, which pins a program to a cgroup until someone
detaches it: seen here, a connect4 program stayed on the root cgroup after its process
died. A BPF link (bpf_link_create, from the libbpf that libbcc loads) detaches when its last
file descriptor closes, so a SIGKILLed agent leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
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


def attached_program_ids(cgroup_path: str, attach_type: int) -> list[int]:
    """IDs of the programs attached to a cgroup for one attach type (BPF_PROG_QUERY)."""
    ids = (ctypes.c_uint32 * 64)()

    class QueryAttr(ctypes.Structure):
        _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                    ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                    ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32),
                    ("_pad", ctypes.c_uint32 * 16)]

    cgroup_fd = os.open(cgroup_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attr = QueryAttr(target_fd=cgroup_fd, attach_type=attach_type,
                         prog_ids=ctypes.addressof(ids), prog_cnt=len(ids))
        if _libc().syscall(SYS_BPF, BPF_PROG_QUERY, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"BPF_PROG_QUERY on {cgroup_path}: {os.strerror(err)}")
    finally:
        os.close(cgroup_fd)
    return list(ids[: attr.prog_cnt])


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


def tracepoint_program_ids(perf_fd: int) -> list[int]:
    """IDs of the programs attached to the tracepoint event a perf event fd is open on."""
    import fcntl

    buf = bytearray(8 + 4 * 64)
    buf[0:4] = (64).to_bytes(4, "little")  # ids_len
    fcntl.ioctl(perf_fd, PERF_EVENT_IOC_QUERY_BPF, buf)
    count = min(int.from_bytes(buf[4:8], "little"), 64)
    return [int.from_bytes(buf[8 + 4 * i: 12 + 4 * i], "little") for i in range(count)]
