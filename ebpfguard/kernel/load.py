"""Loading: compile the probes in bpf/ with bcc, attach them, and drain their ring buffers.

The only module that talks to bcc. Bulk records are submitted without waking us; `drain()` is
called on a short timer and hands each record's bytes to the consumer in one batch, read
from the rings' mapped pages (kernel/ringbuf.py) or, where that is not safe, by libbpf.
"""

from __future__ import annotations

import ctypes
import gzip
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from ebpfguard.kernel import features
from ebpfguard.kernel.events import BPF_DIR, C
from ebpfguard.kernel.ringbuf import RingReader, RingSet
from ebpfguard.kernel.links import (
    AttachmentCheck, CgroupLink, link_to_cgroup, program_id,
)


@dataclass(frozen=True)
class CgroupProgram:
    """A cgroup BPF program: its function in the source and where it attaches."""

    function: str
    prog_type: str    # a bcc.BPF program-type attribute name
    attach_type: str  # a bcc.BPFAttachType member name


@dataclass(frozen=True)
class ProbeFamily:
    sources: tuple[str, ...]
    tracepoints: tuple[tuple[str, str], ...]
    cgroup_programs: tuple[CgroupProgram, ...] = ()


# The family names are the PROBE_* enum of bpf/events.h, lower-cased; they label losses
# and health. Tracepoints attach by bcc's naming (TRACEPOINT_PROBE); cgroup programs attach
# to the cgroup2 root through BPF links.
PROBE_FAMILIES: dict[str, ProbeFamily] = {
    "exec": ProbeFamily(("exec.bpf.c", "exec_exit.bpf.c"), (
        ("syscalls", "sys_enter_execve"), ("syscalls", "sys_exit_execve"),
        ("syscalls", "sys_enter_execveat"), ("syscalls", "sys_exit_execveat"),
    )),
    "proc": ProbeFamily(("proc.bpf.c",), (
        ("task", "task_newtask"), ("sched", "sched_process_exit"),
        ("syscalls", "sys_enter_exit_group"),
    )),
    "net": ProbeFamily(
        ("net.bpf.c",),
        (("syscalls", "sys_enter_socket"), ("syscalls", "sys_exit_socket"),
         ("syscalls", "sys_enter_connect"), ("syscalls", "sys_exit_connect")),
        (CgroupProgram("cgroup__connect4", "CGROUP_SOCK_ADDR", "CGROUP_INET4_CONNECT"),
         CgroupProgram("cgroup__connect6", "CGROUP_SOCK_ADDR", "CGROUP_INET6_CONNECT")),
    ),
    "open": ProbeFamily(("open.bpf.c",), (
        ("syscalls", "sys_enter_openat"), ("syscalls", "sys_exit_openat"),
        ("syscalls", "sys_enter_openat2"), ("syscalls", "sys_exit_openat2"),
    )),
    "escape": ProbeFamily(("escape.bpf.c",), (
        ("cgroup", "cgroup_attach_task"), ("syscalls", "sys_enter_setns"),
        ("syscalls", "sys_enter_unshare"), ("syscalls", "sys_enter_mount"),
        ("syscalls", "sys_enter_fsmount"), ("syscalls", "sys_enter_move_mount"),
    )),
    "tamper": ProbeFamily(("tamper.bpf.c",), (
        ("syscalls", "sys_enter_bpf"), ("syscalls", "sys_enter_perf_event_open"),
        ("syscalls", "sys_enter_ptrace"), ("syscalls", "sys_enter_process_vm_writev"),
        ("syscalls", "sys_enter_kill"), ("syscalls", "sys_enter_tkill"),
        ("syscalls", "sys_enter_tgkill"), ("syscalls", "sys_enter_pidfd_open"),
    )),
    "flow": ProbeFamily(
        ("flow.bpf.c",),
        (),
        (CgroupProgram("cgroup__sock_create", "CGROUP_SOCK", "CGROUP_INET_SOCK_CREATE"),
         CgroupProgram("cgroup_skb__egress", "CGROUP_SKB", "CGROUP_INET_EGRESS"),
         CgroupProgram("cgroup_skb__ingress", "CGROUP_SKB", "CGROUP_INET_INGRESS")),
    ),
}

# Shared by the families, first in the program text: the ring buffers and loss counters,
# the per-sandbox rate limit of the bulk kinds, and the response maps and checks.
SHARED_SOURCES = ("common.h", "ratelimit.bpf.c", "response.h")
# The ring buffers, drained in this order: process records before the bulk ones, so an
# exec is known before the network events of its process.
RINGS = ("exec_events", "events")
# Record kinds the rate limits may hold back (the EVENT_* they would have been).
RATE_LIMITED_KINDS = ("socket", "connect", "flow", "exec_argv")

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class ProbeError(Exception):
    """Probes that could not be compiled or attached; the message says why."""


def tracefs_root() -> Optional[str]:
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs() -> str:
    """The tracefs mount, mounting it on /sys/kernel/tracing when absent."""
    root = tracefs_root()
    if root:
        return root
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", b"/sys/kernel/tracing", b"tracefs", 0, None) != 0:
        raise ProbeError(f"tracefs is not mounted and mounting it failed: {os.strerror(ctypes.get_errno())}")
    return "/sys/kernel/tracing"


def tracepoint_has_field(tracefs: str, category: str, event: str, field: str) -> bool:
    try:
        with open(os.path.join(tracefs, "events", category, event, "format")) as f:
            return f" {field};" in f.read()
    except OSError:
        return False


def program_text(families: tuple[str, ...] = tuple(PROBE_FAMILIES)) -> str:
    """common.h and the families' sources, concatenated: bcc rewrites map calls and makes
    tracepoint argument structs only in its main text, never in included files (common.h's
    include guard then makes each family's `#include "common.h"` a no-op)."""
    sources = list(SHARED_SOURCES) + [source for f in families for source in PROBE_FAMILIES[f].sources]
    return "".join((BPF_DIR / name).read_text() for name in sources)


def _ring_pages(probes: Mapping, key: str) -> int:
    pages = int(probes[key])
    if pages <= 0 or pages & (pages - 1):
        raise ProbeError(f"probes.{key} must be a power of two, not {pages}")
    return pages


def btf_names(btf: str, *names: str) -> bool:
    """Whether the kernel's BTF names each of `names` (its string table holds every type and
    enumerator name): a BPF helper exists in this kernel when its BPF_FUNC_* enumerator does,
    a feature probe instead of a guess from the version. False without BTF."""
    try:
        data = Path(btf).read_bytes()
    except OSError:
        return False
    return all(b"\0" + name.encode() + b"\0" in data for name in names)


def local_storage_flags(allowed: Callable[[int, int, int], bool] = features.helper_allowed) -> list[str]:
    """Whether the probes may keep per-thread state in the thread's local storage here
    (`allowed` is features.helper_allowed, or a stand-in): from tracepoints and cgroup/connect
    hooks (Linux 5.11). Without it, bpf/net.bpf.c falls back to a table by thread id.
    (cgroup_skb has socket storage from 5.2, below our minimum: no probe needed.)"""
    flags = []
    if all(allowed(prog_type, helper, attach)
           for prog_type, attach in ((features.PROG_TYPE_TRACEPOINT, 0),
                                     (features.PROG_TYPE_CGROUP_SOCK_ADDR, features.ATTACH_CGROUP_INET4_CONNECT))
           for helper in (features.FUNC_TASK_STORAGE_GET, features.FUNC_GET_CURRENT_TASK_BTF)):
        flags.append("-DHAVE_TASK_STORAGE")
    return flags


def kernel_hz(config_files: Sequence[str] = ("/proc/config.gz", f"/boot/config-{os.uname().release}")) -> Optional[int]:
    """The running kernel's CONFIG_HZ (jiffies a second), from the first of its build
    configurations found (gzipped where named .gz); None where none is there."""
    for path in config_files:
        try:
            with (gzip.open(path, "rt") if path.endswith(".gz") else open(path)) as config:
                for line in config:
                    if line.startswith("CONFIG_HZ="):
                        return int(line.split("=", 1)[1])
        except (OSError, ValueError, EOFError):
            continue
    return None


def clock_flags(hz: Optional[int], allowed: Callable[[int, int, int], bool] = features.helper_allowed) -> list[str]:
    """The rate limits' clock (bpf/ratelimit.bpf.c `bucket_clock`): jiffies, where the kernel's
    HZ is known and every hook that sends bulk records may read them (Linux 5.5)."""
    hooks = ((features.PROG_TYPE_TRACEPOINT, 0), (features.PROG_TYPE_CGROUP_SKB, 0),
             (features.PROG_TYPE_CGROUP_SOCK_ADDR, features.ATTACH_CGROUP_INET4_CONNECT))
    if hz and 0 < hz <= 10_000 and all(allowed(t, features.FUNC_JIFFIES64, a) for t, a in hooks):
        return [f"-DJIFFY_NS={1_000_000_000 // hz}"]
    return []


def compile_flags(config: Mapping, tracefs: str, btf: str = "/sys/kernel/btf/vmlinux",
                  agent_pid: Optional[int] = None,
                  helper_allowed: Callable[[int, int, int], bool] = features.helper_allowed) -> list[str]:
    """cflags: include path, ring sizes, rate limit, features found in this kernel (helpers
    through `helper_allowed`), the lineage map's size, the sandbox names the kernel knows,
    and the agent's pid."""
    probes = config["probes"]
    limit = probes["rate_limit"]
    rate, burst = int(limit["events_per_s"]), int(limit["burst"])
    if rate < 0 or rate > 1_000_000_000 or (rate and burst < 1):
        raise ProbeError("probes.rate_limit: events_per_s must be 0 (off) to 1e9, and burst at least 1 "
                         f"(not {rate} and {burst})")
    stack_kib = int(limit["stack_argv_kib_per_s"])
    if stack_kib < 0 or stack_kib > 1 << 30:
        raise ProbeError(f"probes.rate_limit.stack_argv_kib_per_s must be 0 (off) or more, not {stack_kib}")
    # In the kernel's unit, ARGV_STACK_CHUNK-byte pieces; at least one when on.
    stack_pieces = 0 if stack_kib == 0 else max(1, stack_kib * 1024 // C["ARGV_STACK_CHUNK"])
    flags = [f"-I{BPF_DIR}", f"-DRINGBUF_PAGES={_ring_pages(probes, 'ring_buffer_pages')}",
             f"-DEXEC_RINGBUF_PAGES={_ring_pages(probes, 'exec_ring_buffer_pages')}",
             f"-DBULK_RATE={rate}", f"-DBULK_BURST={burst}", f"-DARGV_STACK_RATE={stack_pieces}"]
    # The exec probe finds the new image's stack through bpf_task_pt_regs (Linux 5.15),
    # whose result the verifier types from the kernel's BTF: both must be there, or the
    # verifier refuses the whole exec family (a 5.10 kernel with BTF has no such helper).
    if btf_names(btf, "BPF_FUNC_task_pt_regs", "BPF_FUNC_get_current_task_btf"):
        flags.append("-DHAVE_STACK_ARGV")
    # Response checks exist in the hooks only when they may act (bpf/response.h).
    if config.get("response", {}).get("mode") == "enforce":
        flags.append("-DRESPONSE_ENFORCE")
    flags += local_storage_flags(helper_allowed)
    flags += clock_flags(kernel_hz(), helper_allowed)
    # libbpf's reader (where ours cannot run) does not say when it sleeps (bpf/common.h).
    if not RingReader.supported():
        flags.append("-DREADER_WAKE_ALWAYS")
    if tracepoint_has_field(tracefs, "sched", "sched_process_exit", "group_dead"):
        flags.append("-DHAVE_GROUP_DEAD")
    # open(2) has no syscall of its own on arm64 (only openat)
    if os.path.isdir(os.path.join(tracefs, "events", "syscalls", "sys_enter_open")):
        flags.append("-DHAVE_SYS_OPEN")
    # A kernel built without module support has no module syscalls to watch.
    if os.path.isdir(os.path.join(tracefs, "events", "syscalls", "sys_enter_finit_module")):
        flags.append("-DHAVE_MODULE_SYSCALLS")
    lineage_max = int(config["sandbox"]["lineage_max_processes"])
    if lineage_max <= 0:
        raise ProbeError(f"sandbox.lineage_max_processes must be positive, not {lineage_max}")
    flags.append(f"-DLINEAGE_MAX={lineage_max}")
    flags.append(sandbox_name_test(kernel_name_prefixes(config["sandbox"])))
    flags.append(f"-DAGENT_PID={agent_pid if agent_pid is not None else os.getpid()}")
    pidns = os.stat("/proc/self/ns/pid")
    flags += [f"-DHOST_PIDNS_DEV={pidns.st_dev}", f"-DHOST_PIDNS_INO={pidns.st_ino}"]
    return flags


# Fixed cgroup-name prefixes of the runtimes' matchers (ebpfguard/enrich/sandbox.py) that the
# kernel can test by itself. Wider than the matchers (kubepods holds only pods' cgroups):
# the kernel only decides which processes get a lineage entry; names come from userspace.
RUNTIME_PREFIXES = {"kubernetes": ("kubepods",), "docker": ("docker-",), "containerd": ("cri-containerd-",)}
_GLOB_CHARS = set("*?[]\\")


def kernel_name_prefixes(sandbox: Mapping) -> list[str]:
    """Cgroup-name prefixes the kernel tests on a move's destination path: each `pattern`
    glob that is a plain prefix (`sandbox-*`) or a plain name, the runtimes' fixed prefixes,
    and the listed systemd units. Other globs are recognised once userspace resolves them."""
    matchers = sandbox.get("matchers", ())
    prefixes: list[str] = []
    if "pattern" in matchers:
        for pattern in sandbox.get("patterns", ()):
            stem = pattern[:-1] if pattern.endswith("*") else pattern
            if stem and not _GLOB_CHARS & set(stem):
                prefixes.append(stem)
    for matcher, fixed in RUNTIME_PREFIXES.items():
        if matcher in matchers:
            prefixes.extend(fixed)
    if "systemd" in matchers:
        prefixes.extend(sandbox.get("systemd_units", ()))
    return [p for p in dict.fromkeys(prefixes) if p.isprintable() and 0 < len(p) < 64]


def sandbox_name_test(prefixes: list[str]) -> str:
    """The SANDBOX_NAME_AT(b, i) macro of bpf/common.h for these prefixes, as a cflag:
    character compares on a masked index, which the verifier bounds."""
    terms = [" && ".join(f"b[((i) + {k}) & PATH_MASK] == {ord(c)}" for k, c in enumerate(prefix))
             for prefix in prefixes]
    body = " || ".join(f"({t})" for t in terms) or "0"
    return f"-DSANDBOX_NAME_AT(b, i)=({body})"


@dataclass
class ProbeSet:
    """The loaded, attached probes of every family."""

    bpf: object
    families: tuple[str, ...]
    links: list[CgroupLink] = field(default_factory=list)
    delivered: int = 0
    # What each family attached, to check that it stays attached.
    attachments: AttachmentCheck = field(default_factory=AttachmentCheck)
    _seeded: int = 0
    # The growth of the per-cgroup counters since they were last read (CounterGrowth).
    _held_back_growth: "CounterGrowth" = field(init=False)
    _lost_growth: "CounterGrowth" = field(init=False)
    _lineage_epoch: int = 0  # userspace's slot of lineage_epoch
    # The rings, read from their mapped pages (kernel/ringbuf.py); None where libbpf reads them.
    rings: Optional[RingSet] = None
    _on_records: Optional[Callable[[list[bytes]], Optional[int]]] = None
    _stop_at: int = 0  # delivered count at which the current drain stops
    _batch: list[bytes] = field(default_factory=list)  # libbpf's deliveries of the current drain

    def __post_init__(self) -> None:
        self._held_back_growth = CounterGrowth({C[f"EVENT_{kind.upper()}"]: kind for kind in RATE_LIMITED_KINDS})
        self._lost_growth = CounterGrowth({C[f"PROBE_{family.upper()}"]: family for family in self.families})

    @classmethod
    def load(cls, config: Mapping, cgroup_root: str, on_records: Callable[[list[bytes]], Optional[int]],
             helper_allowed: Callable[[int, int, int], bool] = features.helper_allowed) -> "ProbeSet":
        """Compile and attach every probe family; records go to `on_records` on drain(), a
        ring's batch at a time (a negative answer ends the drain).
        `helper_allowed` says which helpers the kernel offers (a stand-in that refuses some
        builds the fallbacks of older kernels)."""
        from bcc import BPF, BPFAttachType  # the distro's python3-bpfcc: unit tests need no bcc

        tracefs = ensure_tracefs()
        families = tuple(PROBE_FAMILIES)
        try:
            bpf = BPF(text=program_text(families), cflags=compile_flags(config, tracefs, helper_allowed=helper_allowed))
        except Exception as exc:  # bcc raises bare Exception for compile and load failures
            raise ProbeError(f"loading the probes failed: {exc}") from None
        probes = cls(bpf, families)
        try:
            for family in families:
                for prog in PROBE_FAMILIES[family].cgroup_programs:
                    attach_type = getattr(BPFAttachType, prog.attach_type)
                    # bcc 0.26 needs the attach type at load time for sock_addr programs.
                    fn = bpf.load_func(prog.function, getattr(BPF, prog.prog_type), attach_type=attach_type)
                    link = link_to_cgroup(fn.fd, cgroup_root, attach_type)
                    probes.links.append(link)
                    probes.attachments.add_cgroup_link(family, program_id(fn.fd), link)
                for category, event in PROBE_FAMILIES[family].tracepoints:
                    fn = bpf.funcs.get(f"tracepoint__{category}__{event}".encode())
                    perf_fd = bpf.tracepoint_fds.get(f"{category}:{event}".encode())
                    if fn is not None and perf_fd is not None:
                        probes.attachments.add_tracepoint(family, program_id(fn.fd), perf_fd)
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception
            probes.close()
            raise ProbeError(f"attaching cgroup programs to {cgroup_root} failed: {exc}") from None

        probes._on_records = on_records
        if RingReader.supported():
            try:
                probes.rings = RingSet([RingReader(bpf[ring].map_fd, bpf[ring].max_entries) for ring in RINGS],
                                       asleep_fd=bpf["reader_asleep"].map_fd)
            except OSError as exc:
                probes.close()
                raise ProbeError(f"mapping the ring buffers failed: {exc}") from None
            return probes

        def deliver(_ctx, data, size):
            probes.delivered += 1
            probes._batch.append(ctypes.string_at(data, size))
            # A negative return makes libbpf stop consuming (this record counts as consumed):
            # at the drain's bound.
            return -1 if probes.delivered >= probes._stop_at else 0

        for ring in RINGS:  # one bcc ring-buffer manager polls them all
            bpf[ring].open_ring_buffer(deliver)
        probes._deliver = deliver  # bcc keeps only a weak hold on the callback
        return probes

    def watch(self, fds: Sequence[int]) -> bool:
        """Have `drain`'s wait end as soon as one of `fds` is readable too; False where libbpf
        reads the rings (its poll takes no other descriptor), so the wait must stay short."""
        if self.rings is None:
            return False
        for fd in fds:
            self.rings.watch(fd)
        return True

    def drain(self, wait_ms: int, max_records: int = 1 << 62, deep: bool = False) -> int:
        """Wait up to `wait_ms`, then hand the records in the ring buffers to the consumer,
        process records first, at most `max_records` of them; returns how many there were.
        The bound keeps a ring that fills as fast as we read it from holding the caller
        forever (libbpf consumes until a ring is empty). `deep`: any record ends the wait, not
        only one that can raise an alert (where the rings are read from their pages)."""
        if self.rings is not None:
            self.rings.wait(wait_ms, deep)
            handed = self.rings.read(self._on_records, max_records)
            self.delivered += handed
            return handed
        before = self.delivered
        self._stop_at = before + max_records
        self.bpf.ring_buffer_poll(wait_ms)
        if self.delivered < self._stop_at:
            self.bpf.ring_buffer_consume()
        batch, self._batch = self._batch, []
        if batch:
            self._on_records(batch)
        return self.delivered - before

    def lost(self) -> dict[str, int]:
        """Records the kernel could not deliver, per family, since load."""
        table = self.bpf["lost"]
        return {
            family: int(table.sum(table.Key(C[f"PROBE_{family.upper()}"])).value)
            for family in self.families
        }

    def attached(self) -> dict[str, bool]:
        """Each family: every program it attached is still attached where it was (the
        tracepoint's or the cgroup's attached program ids still list it)."""
        return self.attachments.attached(self.families)

    def mark_sandbox_cgroup(self, cgroup_id: int) -> None:
        """Tell the kernel a cgroup is (in) a sandbox: processes found in it get a lineage."""
        table = self.bpf["sandbox_cgroups"]
        table[table.Key(cgroup_id)] = table.Leaf(1)
        self._lineage_changed()

    def seed_lineage(self, pid: int, cgroup_id: int) -> None:
        """Give a process already running in a sandbox its lineage entry, if it has none."""
        table = self.bpf["lineage"]
        key = table.Key(pid)
        if table.get(key) is None:
            table[key] = table.Leaf(cgroup_id)
            # Counted with the kernel's inserts, so evictions stay inserts - deletes - live.
            self._seeded += 1
            self._lineage_changed()

    def _lineage_changed(self) -> None:
        """Tasks forget the lineage they remembered (bpf/common.h lineage_epoch)."""
        self._lineage_epoch += 1
        table = self.bpf["lineage_epoch"]
        table[table.Key(C["LINEAGE_EPOCH_USERSPACE"])] = table.Leaf(self._lineage_epoch)

    def lineage_counts(self) -> tuple[int, int, int]:
        """(entries inserted, entries deleted at exit, live entries) of the lineage map; what
        the LRU pushed out is inserted - deleted - live."""
        counts = self.bpf["lineage_counts"]
        inserts = int(counts.sum(counts.Key(C["LINEAGE_INSERTS"])).value) + self._seeded
        deletes = int(counts.sum(counts.Key(C["LINEAGE_DELETES"])).value)
        live = sum(1 for _ in self.bpf["lineage"].keys())
        return inserts, deletes, live

    def take_held_back(self) -> dict[tuple[int, str], int]:
        """What the rate limits held back since the last call: (cgroup id, kind) -> count."""
        return _take_growth(self.bpf["held_back"], self._held_back_growth)

    def take_lost_by_cgroup(self) -> dict[tuple[int, str], int]:
        """Records a full ring lost since the last call: (cgroup id, probe family) -> count."""
        return _take_growth(self.bpf["lost_by_cgroup"], self._lost_growth)

    def close(self) -> None:
        """Detach every probe: close the cgroup links, and let bcc detach the tracepoints."""
        if self.rings is not None:
            self.rings.close()
            self.rings = None
        for link in self.links:
            link.close()
        self.attachments.close()
        # Each tracepoint detach waits for RCU grace periods (~40 ms each here): one thread
        # per tracepoint overlaps them, so SIGTERM ends the agent within a second.
        tracepoints = list(self.bpf.tracepoint_fds)
        if tracepoints:
            with ThreadPoolExecutor(len(tracepoints), thread_name_prefix="ebpfguard-detach") as pool:
                list(pool.map(self.bpf.detach_tracepoint, tracepoints))
        self.bpf.cleanup()


# A cgroup's counter that has not grown for this long is deleted from its map (see CounterGrowth).
IDLE_COUNTER_S = 60.0


class CounterGrowth:
    """How much each counter of a cgroup_count_key -> u64 map grew since the last read.

    The probes only add to these counters (an entry is inserted at 1, then incremented
    through a pointer from a lookup), so they are read without being cleared: a delete
    racing an increment loses it (the increment lands in the deleted entry), and reading
    with BPF_MAP_LOOKUP_AND_DELETE_BATCH every second lost a count now and then while a
    cgroup's records were being held back. Only a counter idle for IDLE_COUNTER_S is deleted
    (the maps are LRUs of bounded size, and a gone cgroup's entries would stay in them):
    an increment racing that delete is the one that can still be lost. An entry the LRU
    evicted and the probe inserted again counts from zero."""

    def __init__(self, names: Mapping[int, str]) -> None:
        self.names = names
        self._last: dict[tuple[int, int], tuple[int, float]] = {}  # -> (value, when it last grew)

    def update(self, values: Mapping[tuple[int, int], int], now: float) -> tuple[dict[tuple[int, str], int], list]:
        """`values`: (cgroup id, kind) -> counter, as read now. Returns the growth per
        (cgroup id, name of the kind) and the keys idle long enough to delete."""
        growth: dict[tuple[int, str], int] = {}
        idle = []
        kept = {}
        for key, value in values.items():
            before, grew_at = self._last.get(key, (0, now))
            grown = value - before if value >= before else value
            if grown > 0:
                name = (key[0], self.names.get(key[1], str(key[1])))
                growth[name] = growth.get(name, 0) + grown
                grew_at = now
            elif now - grew_at >= IDLE_COUNTER_S:
                idle.append(key)
                continue
            kept[key] = (value, grew_at)
        self._last = kept
        return growth, idle

    def tracks_any(self) -> bool:
        """Whether a counter was seen at the last read (else an empty map needs no read)."""
        return bool(self._last)


def _take_growth(table, growth: CounterGrowth) -> dict[tuple[int, str], int]:
    """The growth of a cgroup_count_key -> u64 map's counters since the last call; deletes
    the entries idle for IDLE_COUNTER_S."""
    if not growth.tracks_any() and _is_empty(table):  # the usual case, read every second
        return {}
    values = {(int(key.cgroup_id), int(key.kind)): int(value) for key, value in table.items_lookup_batch()}
    grown, idle = growth.update(values, time.monotonic())
    for cgroup_id, kind in idle:
        try:
            del table[table.Key(cgroup_id, kind)]
        except KeyError:  # the LRU evicted it meanwhile
            pass
    return grown


def _is_empty(table) -> bool:
    """Whether a hash map has no entry (one BPF_MAP_GET_NEXT_KEY from no key)."""
    from bcc.libbcc import lib  # the distro's python3-bpfcc: unit tests need no bcc

    key = table.Key()
    return lib.bpf_get_first_key(table.map_fd, ctypes.byref(key), ctypes.sizeof(key)) != 0
