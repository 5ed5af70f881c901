"""The ring-buffer reader over a real BPF ring: records of two sizes, discarded ones among
them, through many wraps of a one-page ring, each read once, in order, bytes intact."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from ebpfguard.kernel.ringbuf import RingReader, RingSet

PROGRAM = r"""
BPF_RINGBUF_OUTPUT(ring, 1);
BPF_ARRAY(counter, u64, 1);

struct small { u64 seq; u32 size; u32 pad; };
struct big { u64 seq; u32 size; u32 pad; u8 fill[200]; };

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    if ((bpf_get_current_pid_tgid() >> 32) != OWNER_PID)
        return 0;
    int zero = 0;
    u64 *count = counter.lookup(&zero);
    if (!count)
        return 0;
    u64 seq = __sync_fetch_and_add(count, 1);
    if (seq % 3 == 2) {
        struct big *gone = ring.ringbuf_reserve(sizeof(struct big));
        if (gone) {
            gone->seq = seq;
            ring.ringbuf_discard(gone, 0);
        }
        return 0;
    }
    if (seq % 2) {
        struct big b = {};
        b.seq = seq;
        b.size = sizeof(b);
        for (int i = 0; i < 200; i++)
            b.fill[i] = (u8)(seq + i);
        ring.ringbuf_output(&b, sizeof(b), 0);
    } else {
        struct small s = {};
        s.seq = seq;
        s.size = sizeof(s);
        ring.ringbuf_output(&s, sizeof(s), 0);
    }
    return 0;
}
"""

CALLS = 3000
BATCH = 12  # at most 12 * 216 bytes between reads: the 4 KiB ring never fills


@pytest.fixture
def ring():
    from bcc import BPF

    if not RingReader.supported():
        pytest.skip("this machine's loads may be reordered: the agent uses libbpf's reader here")
    bpf = BPF(text=PROGRAM.replace("OWNER_PID", str(os.getpid())).encode())
    table = bpf[b"ring"]
    reader = RingReader(table.map_fd, table.max_entries)
    try:
        yield reader
    finally:
        reader.close()
        bpf.cleanup()


def test_every_committed_record_is_read_once_in_order_across_wraps(ring):
    libc = ctypes.CDLL(None, use_errno=True)
    getppid = libc.syscall
    records: list[bytes] = []
    for start in range(0, CALLS, BATCH):
        for _ in range(min(BATCH, CALLS - start)):
            getppid(110)  # SYS_getppid on x86-64, through syscall(2): no libc caching
        records += ring.read(1 << 30)
    assert not ring.pending()
    seqs = [struct.unpack_from("<Q", r)[0] for r in records]
    assert seqs == [seq for seq in range(CALLS) if seq % 3 != 2]
    for record, seq in zip(records, seqs):
        size = struct.unpack_from("<I", record, 8)[0]
        assert len(record) == size == (216 if seq % 2 else 16)
        if seq % 2:
            assert record[16:] == bytes((seq + i) & 0xFF for i in range(200))


def test_a_read_stops_at_its_bound_and_the_next_goes_on_from_there(ring):
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(10):
        libc.syscall(110)
    first = ring.read(2)
    second = ring.read(1)
    rest = ring.read(100)  # seqs 0..9 less the three discarded, less three read
    assert (len(first), len(second), len(rest)) == (2, 1, 4)
    assert not ring.pending()
    seqs = [struct.unpack_from("<Q", r)[0] for r in first + second + rest]
    assert seqs == [0, 1, 3, 4, 6, 7, 9]


def test_a_ring_set_hands_over_a_batch_and_stops_when_the_consumer_asks(ring):
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(10):
        libc.syscall(110)
    batches: list[list[bytes]] = []
    rings = RingSet([ring])
    try:
        assert rings.read(lambda batch: batches.append(batch) or -1, 5) == 5
        assert rings.read(lambda batch: batches.append(batch), 100) == 2
    finally:
        rings.close()  # the reader's too: closing it again in the fixture does nothing
    assert [len(b) for b in batches] == [5, 2]
    seqs = [struct.unpack_from("<Q", r)[0] for b in batches for r in b]
    assert seqs == [0, 1, 3, 4, 6, 7, 9]


def test_the_data_area_is_mapped_once_so_the_ring_counts_once_in_rss(ring):
    from ebpfguard.kernel.footprint import parse_smaps

    with open("/proc/self/smaps") as smaps:
        maps = [m for m in parse_smaps(smaps.read()) if m.path == "anon_inode:bpf-map"]
    page = os.sysconf("SC_PAGE_SIZE")
    # the consumer page, then the producer page and the one-page data area
    assert sorted(m.end - m.start for m in maps) == [page, 2 * page]
    assert sum(m.rss_kib for m in maps) == 3 * page // 1024  # the kernel maps every page at once
