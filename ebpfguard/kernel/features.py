"""Which BPF helpers this kernel lets a program type call: a runtime probe, not a version guess.

The verifier looks a helper up for the program's type before anything else: loading the two
instructions `call HELPER; exit` fails with "unknown func" (or "program of this type cannot
use helper") when the type may not call it, and with some other complaint (an argument not set
up) when it may. The same test as libbpf's libbpf_probe_bpf_helper, which bcc does not export.
"""

from __future__ import annotations

import ctypes
import functools
import os

from ebpfguard.kernel.links import SYS_BPF, _libc

BPF_PROG_LOAD = 5
LOG_SIZE = 4096
REFUSED = (b"unknown func", b"cannot use helper", b"invalid func")

# Program types (enum bpf_prog_type) and expected attach types (enum bpf_attach_type).
PROG_TYPE_TRACEPOINT = 5
PROG_TYPE_CGROUP_SKB = 8
PROG_TYPE_CGROUP_SOCK_ADDR = 18
ATTACH_CGROUP_INET4_CONNECT = 10

# Helper ids (enum bpf_func_id).
FUNC_MAP_LOOKUP_ELEM = 1
FUNC_TASK_STORAGE_GET = 156
FUNC_GET_CURRENT_TASK_BTF = 158
FUNC_JIFFIES64 = 118


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32)]


@functools.lru_cache(maxsize=None)
def helper_allowed(prog_type: int, helper: int, attach_type: int = 0) -> bool:
    """Whether a program of `prog_type` (attached at `attach_type`) may call `helper`."""
    # struct bpf_insn: code, dst/src registers, offset, immediate
    insns = (ctypes.c_uint64 * 2)(0x85 | (helper << 32), 0x95)
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr = _ProgLoadAttr(prog_type=prog_type, insn_cnt=2, insns=ctypes.addressof(insns),
                         license=ctypes.addressof(license), log_level=1, log_size=LOG_SIZE,
                         log_buf=ctypes.addressof(log), expected_attach_type=attach_type)
    fd = _libc().syscall(SYS_BPF, BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd >= 0:  # cannot happen for a helper that takes arguments; allowed if it does
        os.close(fd)
        return True
    # No log at all: refused before the verifier ran (no privilege), which tells nothing.
    return bool(log.value) and not any(reason in log.value for reason in REFUSED)
