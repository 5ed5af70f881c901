"""Reading BPF ring buffers straight from their shared pages.

libbpf (through bcc) hands each record to Python through a ctypes callback: every record
re-takes the interpreter lock, and with the detection thread waiting for that lock each one
can hand it over and wait to get it back. Here a drain is a Python loop over the mapped
pages: the kernel's ring-buffer layout (its ABI, include/uapi/linux/bpf.h and
kernel/bpf/ringbuf.c: a consumer-position page we write, then a read-only producer-position
page followed by the data area), an 8-byte header before each record (its length, with a busy
and a discard bit), and records 8-byte aligned. The kernel offers the data area twice in a row,
so that a record that wraps reads as one piece; we map it once and join a wrapped record's two
parts: the kernel maps every page of the mapping at once, so the second copy would count the
whole ring twice in the agent's RSS (24 MiB at the default sizes) for the rare record that wraps.

Plain loads are enough to read what the kernel committed only where the CPU keeps loads in
order (x86-64's total store order); elsewhere `RingReader.supported()` is false and the agent
keeps libbpf's reader, whose loads carry the barriers.
"""

from __future__ import annotations

import mmap
import platform
import select
import struct
import threading
from typing import Callable, Optional, Sequence

from ebpfguard.kernel.events import C

BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8
_POSITION = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
READER_AWAKE, READER_ASLEEP, READER_ASLEEP_DEEP = C["READER_AWAKE"], C["READER_ASLEEP"], C["READER_ASLEEP_DEEP"]
# Machines whose loads are not reordered with older loads (so a record's bytes, read after
# its header showed it committed, are the committed ones).
ORDERED_LOADS = frozenset({"x86_64", "amd64", "i386", "i686"})


class RingReader:
    """One ring buffer map, mapped: `read` hands over what the kernel committed, in order."""

    def __init__(self, map_fd: int, size: int) -> None:
        """`size` is the map's max_entries (the data area, a power of two of pages)."""
        page = mmap.PAGESIZE
        self.fd = map_fd
        self._mask = size - 1
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self._pages = mmap.mmap(map_fd, page + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._consumer.close()
            raise
        self._data_at = page
        self._data_end = page + size

    @staticmethod
    def supported() -> bool:
        """Whether plain loads read committed records safely on this machine."""
        return platform.machine().lower() in ORDERED_LOADS

    def pending(self) -> bool:
        """Whether the kernel has written past what was read."""
        return _POSITION.unpack_from(self._pages, 0)[0] != _POSITION.unpack_from(self._consumer, 0)[0]

    def read(self, max_records: int) -> list[bytes]:
        """The committed records' bytes, at most `max_records`, in order. Their space goes
        back to the kernel at once (they are copies), with one write of the consumer position
        per read: the producers read it on every reserve, and each write of it takes its
        cache line away from their CPUs."""
        pages, mask, data_at, data_end = self._pages, self._mask, self._data_at, self._data_end
        position = start_position = _POSITION.unpack_from(self._consumer, 0)[0]
        produced = _POSITION.unpack_from(pages, 0)[0]
        records: list[bytes] = []
        while len(records) < max_records:
            if position >= produced:
                produced = _POSITION.unpack_from(pages, 0)[0]
                if position >= produced:
                    break
            start = data_at + (position & mask)
            length = _LENGTH.unpack_from(pages, start)[0]
            if length & BPF_RINGBUF_BUSY_BIT:
                break  # reserved, not yet committed: the records after it wait too
            size = length & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT)
            # The header never wraps (8-byte aligned in a ring of whole pages); the record may.
            end = start + BPF_RINGBUF_HDR_SZ + size
            if not length & BPF_RINGBUF_DISCARD_BIT:
                if end <= data_end:
                    records.append(pages[start + BPF_RINGBUF_HDR_SZ:end])
                else:
                    records.append(pages[start + BPF_RINGBUF_HDR_SZ:data_end] + pages[data_at:data_at + end - data_end])
            position += (size + BPF_RINGBUF_HDR_SZ + 7) & ~7
        if position != start_position:
            _POSITION.pack_into(self._consumer, 0, position)
        return records

    def close(self) -> None:
        self._pages.close()
        self._consumer.close()


class RingSet:
    """Several ring buffers, read in their order, woken by epoll on their map fds.

    With `asleep_fd` (the probes' `reader_asleep` map, bpf/common.h) the set says when it
    sleeps, and the probes wake it only then: a wakeup costs the probe a self-IPI (15 us per
    exec on a VM), so one per sleep rather than one per record that can raise an alert."""

    def __init__(self, readers: Sequence[RingReader], asleep_fd: Optional[int] = None) -> None:
        self.readers = tuple(readers)
        self._epoll = select.epoll()
        for reader in self.readers:
            self._epoll.register(reader.fd, select.EPOLLIN)
        self._asleep = None if asleep_fd is None else mmap.mmap(
            asleep_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        # Taking and releasing a lock is a locked instruction, a full barrier on x86 (where
        # this reader runs): the flag's store is seen before the rings' positions are read.
        self._barrier = threading.Lock()

    def watch(self, fd: int) -> None:
        """Wake `wait` too while `fd` is readable (a socket's listener, an eventfd)."""
        self._epoll.register(fd, select.EPOLLIN)

    def wait(self, timeout_ms: int, deep: bool = False) -> None:
        """Until a ring has a record whose producer asked to wake us (`deep`: any record), a
        watched descriptor is readable, or `timeout_ms`."""
        if timeout_ms <= 0:
            return
        asleep = self._asleep
        if asleep is not None:
            asleep[0] = READER_ASLEEP_DEEP if deep else READER_ASLEEP
            with self._barrier:
                pass
        try:
            if not any(reader.pending() for reader in self.readers):
                self._epoll.poll(timeout_ms / 1000)
        except InterruptedError:
            pass
        finally:
            if asleep is not None:
                asleep[0] = READER_AWAKE

    def read(self, handle: Callable[[list[bytes]], Optional[int]], max_records: int) -> int:
        """Records of each ring in turn, at most `max_records` in all, handed over a ring's
        batch at a time; how many there were. A negative answer from `handle` ends the read."""
        total = 0
        for reader in self.readers:
            records = reader.read(max_records - total)
            if not records:
                continue
            total += len(records)
            stop = handle(records)
            if (stop is not None and stop < 0) or total >= max_records:
                break
        return total

    def close(self) -> None:
        self._epoll.close()
        if self._asleep is not None:
            self._asleep.close()
        for reader in self.readers:
            reader.close()
