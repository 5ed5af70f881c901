"""The probes wake the ring reader only while it sleeps (bpf/common.h `wake_reader`): a record
that can raise an alert (a sandbox's connect among them) wakes a sleeping reader at once, a
bulk record (the host's connect) does not unless the reader sleeps deep (an idle reader), and
no record wakes a reader that is awake (a wakeup costs the probe a self-IPI). A descriptor the
reader watches beside the rings ends its wait too. The probes' own `submit` runs from a test
program, so the rings hold only this test's records."""

from __future__ import annotations

import ctypes
import os
import select
import threading
import time

import pytest

from ebpfguard.kernel.events import BPF_DIR
from ebpfguard.kernel.ringbuf import READER_ASLEEP, READER_ASLEEP_DEEP, RingReader, RingSet

# bcc rewrites map calls only in its main text, so common.h goes in whole (as load.py does).
PROGRAM = r"""
static __always_inline int send_record(u32 kind, u64 lineage_cgroup_id)
{
    struct exec_event e = {};

    if ((bpf_get_current_pid_tgid() >> 32) != OWNER_PID)
        return 0;
    fill_header_as(&e.hdr, kind, lineage_cgroup_id);
    submit(&e, sizeof(e), kind == EVENT_EXEC ? PROBE_EXEC : PROBE_PROC);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    return send_record(EVENT_EXEC, 0);  /* can raise an alert */
}

TRACEPOINT_PROBE(syscalls, sys_enter_getpgrp)
{
    return send_record(EVENT_FORK, 0);  /* bulk */
}

TRACEPOINT_PROBE(syscalls, sys_enter_getsid)
{
    /* a connect: from a sandbox's lineage when getsid's argument says so */
    return send_record(EVENT_CONNECT, args->pid == SANDBOXED ? 42 : 0);
}
"""

SYS_GETPPID = 110  # x86-64; through syscall(2), so libc cannot answer from a cache
SYS_GETPGRP = 111
SYS_GETSID = 124
SANDBOXED = 0x5A5A  # getsid's argument that makes the test program's connect a sandbox's
_libc = ctypes.CDLL(None, use_errno=True)


def alerting_record() -> None:
    _libc.syscall(SYS_GETPPID)


def bulk_record() -> None:
    _libc.syscall(SYS_GETPGRP)


def connect_record(sandboxed: bool) -> None:
    _libc.syscall(SYS_GETSID, SANDBOXED if sandboxed else 0)


class Probes:
    """The test program's two rings in a RingSet, its flag, and a fresh epoll to see wakeups."""

    def __init__(self) -> None:
        from bcc import BPF

        text = (BPF_DIR / "common.h").read_text() + PROGRAM.replace("OWNER_PID", str(os.getpid())).replace("SANDBOXED", str(SANDBOXED))
        self.bpf = BPF(text=text.encode(), cflags=[f"-I{BPF_DIR}", "-DRINGBUF_PAGES=1", "-DEXEC_RINGBUF_PAGES=1"])
        self.rings = RingSet([RingReader(self.bpf[name].map_fd, self.bpf[name].max_entries)
                              for name in (b"exec_events", b"events")],
                             asleep_fd=self.bpf[b"reader_asleep"].map_fd)

    def asleep(self) -> int:
        return self.bpf[b"reader_asleep"][ctypes.c_uint32(0)].value

    def set_asleep(self, depth: int = READER_ASLEEP) -> None:
        self.bpf[b"reader_asleep"][ctypes.c_uint32(0)] = ctypes.c_uint64(depth)

    def drain(self) -> int:
        return self.rings.read(lambda _record: None, 1 << 30)

    def watcher(self) -> select.epoll:
        """An epoll registered while the rings are empty: ready only once a probe wakes it."""
        self.drain()
        watch = select.epoll()
        for reader in self.rings.readers:
            watch.register(reader.fd, select.EPOLLIN)
        assert watch.poll(0) == []
        return watch

    def close(self) -> None:
        self.rings.close()
        self.bpf.cleanup()


@pytest.fixture(scope="module")
def probes():
    if not RingReader.supported():
        pytest.skip("this machine's loads may be reordered: the agent uses libbpf's reader here")
    made = Probes()
    try:
        yield made
    finally:
        made.close()


def start_waiting(probes: Probes, deep: bool = False) -> tuple[threading.Thread, threading.Event]:
    """A thread in a 60 s wait on the rings, asleep by the time this returns, and the event
    set when its wait ends."""
    probes.drain()
    probes.rings.wait(1)  # takes what earlier tests' wakeups left on the set's own epoll
    assert probes.asleep() == 0
    returned = threading.Event()
    waiter = threading.Thread(target=lambda: (probes.rings.wait(60_000, deep), returned.set()), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 10
    while probes.asleep() != (READER_ASLEEP_DEEP if deep else READER_ASLEEP) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # from the flag to epoll_wait
    return waiter, returned


def test_a_record_that_can_alert_wakes_no_reader_that_is_awake(probes):
    watch = probes.watcher()
    alerting_record()
    assert any(reader.pending() for reader in probes.rings.readers)
    assert watch.poll(0) == []
    assert probes.drain() == 1
    watch.close()


def test_a_record_that_can_alert_wakes_a_sleeping_reader_once(probes):
    watch = probes.watcher()
    probes.set_asleep()
    alerting_record()
    assert probes.asleep() == 0  # taken by the probe that woke it
    assert watch.poll(0) != []
    probes.drain()
    watch.close()
    watch = probes.watcher()
    alerting_record()  # the flag is gone: no second wakeup for the same sleep
    assert watch.poll(0) == []
    assert probes.drain() == 1
    watch.close()


def test_a_bulk_record_leaves_a_sleeping_reader_asleep(probes):
    watch = probes.watcher()
    probes.set_asleep()
    bulk_record()
    assert probes.asleep() == 1
    assert watch.poll(0) == []
    assert probes.drain() == 1
    watch.close()


def test_a_bulk_record_wakes_a_reader_that_sleeps_deep(probes):
    watch = probes.watcher()
    probes.set_asleep(READER_ASLEEP_DEEP)
    bulk_record()
    assert probes.asleep() == 0
    assert watch.poll(0) != []
    assert probes.drain() == 1
    watch.close()


def test_a_sandboxs_connect_wakes_a_sleeping_reader_and_the_hosts_does_not(probes):
    watch = probes.watcher()
    probes.set_asleep()
    connect_record(sandboxed=False)
    assert probes.asleep() == 1
    assert watch.poll(0) == []
    connect_record(sandboxed=True)
    assert probes.asleep() == 0
    assert watch.poll(0) != []
    assert probes.drain() == 2
    watch.close()


def test_a_watched_descriptor_ends_the_wait_and_the_rings_are_still_read(probes):
    wakeup = os.eventfd(0, os.EFD_NONBLOCK)
    probes.rings.watch(wakeup)
    try:
        waiter, returned = start_waiting(probes)
        bulk_record()
        assert not returned.wait(0.2)
        os.eventfd_write(wakeup, 1)
        assert returned.wait(10), "a 60 s wait should end when the watched descriptor is readable"
        waiter.join(10)
        assert probes.asleep() == 0
        assert probes.drain() == 1
    finally:
        os.close(wakeup)  # which takes it out of the epoll


def test_the_reader_sleeps_only_while_it_waits_an_alerting_record_ends_its_wait_and_any_record_a_deep_one(probes):
    waiter, returned = start_waiting(probes)
    assert probes.asleep() == READER_ASLEEP
    bulk_record()
    assert not returned.wait(0.2)  # a bulk record waits for the next drain
    alerting_record()
    assert returned.wait(10), "a 60 s wait should end at the alerting record"
    waiter.join(10)
    assert probes.asleep() == 0
    assert probes.drain() == 2
    waiter, returned = start_waiting(probes, deep=True)  # an idle reader's sleep
    assert probes.asleep() == READER_ASLEEP_DEEP
    bulk_record()
    assert returned.wait(10), "a deep 60 s wait should end at the first record of any kind"
    waiter.join(10)
    assert probes.asleep() == 0
    assert probes.drain() == 1


def test_a_wait_with_records_pending_does_not_sleep_or_leave_the_flag_set(probes):
    probes.drain()
    bulk_record()
    probes.rings.wait(60_000)  # returns at once: there is a record to read
    assert probes.asleep() == 0
    assert probes.drain() == 1
