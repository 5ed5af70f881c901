"""Enrichment: a decoded kernel record becomes a schema event (design.md), with its time,
node, sandbox (from the cgroup id) and process (pid, ppid, ancestry from the process table).
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections import OrderedDict
from typing import Mapping, Optional

from ebpfguard.clock import BootClock, rfc3339_ns
from ebpfguard.kernel.events import (
    ConnectRecord, ExecArgsRecord, ExecRecord, ExitRecord, FlowRecord, ForkRecord, Header,
    OpenRecord, SocketRecord,
)
from ebpfguard.enrich.pods import PodDirectory
from ebpfguard.enrich.proctable import ProcessTable, read_cmdline
from ebpfguard.enrich.sandbox import CgroupIndex, resolve_sandbox
from ebpfguard.enrich.wire.dns import DnsParseError, parse_dns_message, parse_dns_tcp
from ebpfguard.enrich.wire.tls import client_hello_sni


def text(raw: bytes) -> str:
    """Bytes a process controls, as a string: UTF-8 with invalid bytes as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


def argv_fields(argv: tuple[bytes, ...]) -> dict:
    """`argv` as strings, plus `argv_b64` (each element's exact bytes) when any element is
    not valid UTF-8, so the escaped form never hides what was really passed."""
    out: dict = {"argv": [text(a) for a in argv]}
    try:
        for a in argv:
            a.decode("utf-8")
    except UnicodeDecodeError:
        out["argv_b64"] = [base64.b64encode(a).decode("ascii") for a in argv]
    return out


SO_NETNS_COOKIE = 71  # Linux 5.14+
DNS_PORT = 53
IPPROTO_TCP = 6


def address_text(raw: bytes) -> str:
    """4 or 16 address bytes as text (inet_ntop: what ipaddress gives, at a tenth the cost)."""
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def netns_cookie_of_this_process() -> Optional[int]:
    """The network-namespace cookie of the namespace we run in (the host's, for the agent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    except OSError:
        return None


_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}
_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM", 5: "SOCK_SEQPACKET", 10: "SOCK_PACKET"}
_PROTOCOLS = {0: "default", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 255: "raw"}
_SOCK_TYPE_MASK = 0xF  # the rest are SOCK_NONBLOCK / SOCK_CLOEXEC


def socket_fields(family: int, sock_type: int, protocol: int) -> dict:
    """socket(2) arguments as names (numbers where there is no name)."""
    return {
        "family": _FAMILIES.get(family, str(family)),
        "type": _TYPES.get(sock_type & _SOCK_TYPE_MASK, str(sock_type & _SOCK_TYPE_MASK)),
        "protocol": _PROTOCOLS.get(protocol, str(protocol)),
    }


class Enricher:
    """Turns records into events; keeps the process table current as it goes."""

    def __init__(self, node: str, procs: ProcessTable, cgroups: CgroupIndex,
                 sandbox_settings: Mapping, clock: BootClock, pods: Optional[PodDirectory] = None) -> None:
        self.node = node
        self.pods = pods
        self.procs = procs
        self.cgroups = cgroups
        self.sandbox_settings = sandbox_settings
        self.clock = clock
        self.host_netns_cookie = netns_cookie_of_this_process()
        # exec arguments waiting for their result, by pid (a process execs one thing at a time)
        self._exec_args: OrderedDict[int, ExecArgsRecord] = OrderedDict()
        self._sandboxes: dict[int, tuple[int, dict, bool]] = {}

    MAX_PENDING_EXECS = 4096

    def on_fork(self, rec: ForkRecord) -> None:
        self.procs.on_fork(rec.hdr.pid, rec.child_pid, rec.clone_flags, text(rec.hdr.comm))

    def on_exec_args(self, rec: ExecArgsRecord) -> None:
        self._exec_args[rec.hdr.pid] = rec
        self._exec_args.move_to_end(rec.hdr.pid)
        if len(self._exec_args) > self.MAX_PENDING_EXECS:
            self._exec_args.popitem(last=False)

    def exec_event(self, rec: ExecRecord) -> dict:
        """The exec event: the result joined with the arguments sent at entry."""
        asked = self._exec_args.pop(rec.hdr.pid, None)
        if asked is None:  # its entry record was lost (counted by the kernel) or predates us
            return self._exec_without_args(rec)
        comm = text(rec.hdr.comm)
        argv_bytes, filename_bytes, source = asked.argv, asked.filename, None
        if rec.retval == 0 and (asked.argv_unreadable or asked.filename_unreadable):
            # The kernel could not read them without faulting pages in; the new image's
            # /proc entry shows what it was started with (a miner lives long enough for this).
            from_proc = read_cmdline(self.procs.proc_root, rec.hdr.pid)
            if from_proc is not None:
                argv_bytes, source = from_proc, "proc"
            if asked.filename_unreadable:
                filename_bytes = os.fsencode(_exe_of(rec.hdr.pid, "") or "")
        argv = argv_fields(argv_bytes)
        filename = text(filename_bytes)
        exe = None
        if rec.retval == 0:
            exe = _exe_of(rec.hdr.pid, filename)
            self.procs.on_exec(rec.hdr.pid, comm, exe, tuple(argv["argv"]))
        else:
            known = self.procs.lookup(rec.hdr.pid)
            exe = known.exe if known else None
        event = self._base("exec", rec.hdr, comm, exe, argv, asked.argv_truncated)
        event["filename"] = filename
        event["retval"] = rec.retval
        if source is not None:
            event["argv_source"] = source
        elif asked.argv_unreadable:
            event["partial"] = sorted(set(event.get("partial", [])) | {"argv"})
        return event

    def _exec_without_args(self, rec: ExecRecord) -> dict:
        event = self._base("exec", rec.hdr, text(rec.hdr.comm), None, None, False)
        event["partial"] = sorted(set(event.get("partial", [])) | {"argv", "filename"})
        event["filename"] = None
        event["retval"] = rec.retval
        return event

    def exit_event(self, rec: ExitRecord) -> dict:
        event = self._process_event("exit", rec.hdr)
        event["exit_code"] = rec.exit_code
        self.procs.on_exit(rec.hdr.pid)
        return event

    def socket_event(self, rec: SocketRecord) -> dict:
        event = self._process_event("socket", rec.hdr)
        event.update(socket_fields(rec.family, rec.type, rec.protocol))
        event["retval"] = rec.retval
        return event

    def connect_event(self, rec: ConnectRecord) -> dict:
        event = self._process_event("connect", rec.hdr)
        event["family"] = _FAMILIES.get(rec.family, str(rec.family))
        event["daddr"] = address_text(rec.daddr)
        event["dport"] = rec.dport
        event["retval"] = rec.retval if rec.in_syscall else None
        if not rec.in_syscall:
            event["partial"] = sorted(set(event.get("partial", [])) | {"retval"})
        event["sock_cookie"] = rec.sock_cookie
        if self.host_netns_cookie is not None:
            event["host_netns"] = rec.netns_cookie == self.host_netns_cookie
        return event

    def flow_event(self, rec: FlowRecord) -> dict:
        """A `flow` event (the first bytes of one segment; `sni` from a TLS ClientHello), or a
        `dns` event for port 53. Raises DnsParseError for a DNS packet that does not parse."""
        if DNS_PORT in (rec.dport, rec.sport):
            return self.dns_event(rec)
        event = self._flow_base("flow", rec)
        event["seq"] = rec.seq
        event["payload_len"] = rec.payload_len
        event["payload_b64"] = base64.b64encode(rec.payload).decode("ascii")
        if rec.egress and rec.seq == 0:
            sni = client_hello_sni(rec.payload)
            if sni is not None:
                event["sni"] = sni
        return event

    def dns_event(self, rec: FlowRecord) -> dict:
        """A `dns` event: the question, and the answers when it is a response."""
        tcp = rec.protocol == IPPROTO_TCP
        message = parse_dns_tcp(rec.payload) if tcp else parse_dns_message(rec.payload)
        if not message.questions:
            raise DnsParseError("no question")
        event = self._flow_base("dns", rec)
        event["query"], event["qtype"] = message.questions[0]
        event["response"] = message.is_response
        if message.is_response:
            event["rcode"] = message.rcode
            event["answers"] = [a._asdict() for a in message.answers]
        return event

    def _flow_base(self, kind: str, rec: FlowRecord) -> dict:
        if rec.owner_known:
            event = self._process_event(kind, rec.hdr)
        else:  # a socket we did not see created (accepted, or older than the agent)
            event = self._base(kind, rec.hdr, "", None, None, False)
            event["partial"] = sorted(set(event.get("partial", [])) | {"process"})
            event["process"]["pid"] = None
            event["process"]["uid"] = None
        event["direction"] = "egress" if rec.egress else "ingress"
        event["protocol"] = _PROTOCOLS.get(rec.protocol, str(rec.protocol))
        event["daddr"] = address_text(rec.daddr)
        event["dport"] = rec.dport
        event["sport"] = rec.sport
        event["flow_id"] = rec.sock_cookie
        return event

    def open_event(self, rec: OpenRecord) -> dict:
        """An `open` event: a GPU or accelerator device node opened (or tried)."""
        event = self._process_event("open", rec.hdr)
        event["filename"] = text(rec.filename)
        event["flags"] = rec.flags
        event["retval"] = rec.retval
        return event

    def gpu_event(self, sample: dict, cgroup_path: Optional[str]) -> dict:
        """A `gpu` event from an NVML sample of one process: its sandbox comes from its
        cgroup path (NVML knows pids, not cgroup ids)."""
        pid = sample["pid"]
        known = self.procs.lookup(pid)
        cgroup_id = 0
        if cgroup_path is not None:
            try:
                cgroup_id = os.stat(self.cgroups.root + cgroup_path.rstrip("/")).st_ino
            except OSError:
                cgroup_path = None
        hdr = Header(self.clock.now_ktime_ns(), cgroup_id, pid, pid, 0, (known.comm if known else "").encode())
        argv = {"argv": list(known.argv)} if known and known.argv is not None else None
        event = self._base("gpu", hdr, known.comm if known else "", known.exe if known else None, argv, False)
        event["process"]["uid"] = None
        if cgroup_path is None:
            event["sandbox"] = {"name": "unknown", "cgroup": None, "cgroup_id": None, "runtime": None}
        event.update({k: v for k, v in sample.items() if k != "pid"})
        return event

    def _process_event(self, kind: str, hdr: Header) -> dict:
        """An event about a process we know from the table (not an exec)."""
        known = self.procs.lookup(hdr.pid)
        argv = {"argv": list(known.argv)} if known and known.argv is not None else None
        return self._base(kind, hdr, text(hdr.comm), known.exe if known else None, argv, False)

    SANDBOX_TTL_NS = 5_000_000_000

    def _sandbox_of(self, cgroup_id: int) -> tuple[dict, bool]:
        """resolve_sandbox(), remembered per cgroup for a few seconds: matching a path costs
        more than the rest of an event, and a pod's name may show up a little later."""
        now = time.monotonic_ns()
        cached = self._sandboxes.get(cgroup_id)
        if cached is not None and now - cached[0] < self.SANDBOX_TTL_NS:
            return cached[1], cached[2]
        sandbox, known = resolve_sandbox(self.cgroups, cgroup_id, self.sandbox_settings, self.pods)
        if len(self._sandboxes) >= self.cgroups.cache_size:
            self._sandboxes.clear()
        self._sandboxes[cgroup_id] = (now, sandbox, known)
        return sandbox, known

    def _base(self, kind: str, hdr: Header, comm: str, exe: Optional[str],
              argv: Optional[dict], argv_truncated: bool) -> dict:
        partial = []
        sandbox, known = self._sandbox_of(hdr.cgroup_id)
        if not known:
            partial.append("sandbox")
        lineage = self.procs.lineage(hdr.pid)
        if lineage.ppid is None:
            partial.append("ppid")
        if not lineage.complete:
            partial.append("ancestry")
        if exe is None:
            partial.append("exe")
        process = {
            "pid": hdr.pid,
            "ppid": lineage.ppid,
            "uid": hdr.uid,
            "comm": comm,
            "exe": exe,
            "argv": argv["argv"] if argv else [],
            "argv_truncated": argv_truncated,
            "ancestry": lineage.ancestry,
        }
        if argv is None:
            partial.append("argv")
        elif "argv_b64" in argv:
            process["argv_b64"] = argv["argv_b64"]
        event = {
            "kind": kind,
            "time": rfc3339_ns(self.clock.wall_ns(hdr.ktime_ns)),
            "node": self.node,
            "sandbox": sandbox,
            "process": process,
        }
        if partial:
            event["partial"] = partial
        return event


def _exe_of(pid: int, filename: str) -> Optional[str]:
    # An absolute filename is what was executed; a relative one needs the process's view.
    if filename.startswith("/"):
        return filename
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
