"""The soak's memory figures, read from this test process's own /proc entries."""

from __future__ import annotations

import os
import threading

from bench.procinfo import bpf_map_rss_kib, memory, wakeups

SMAPS = """\
7f0000000000-7f0000003000 r--s 00000000 00:0e 1234                       anon_inode:bpf-map
Rss:                  12 kB
Anonymous:             0 kB
7f0000003000-7f0000004000 rw-p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             4 kB
7f0000004000-7f0000006000 r--s 00000000 00:0e 1234                       anon_inode:bpf-map
Rss:                   8 kB
"""


def test_the_bpf_maps_resident_pages_are_summed_over_their_mappings():
    assert bpf_map_rss_kib(SMAPS) == 20


def test_memory_of_a_live_process_adds_up():
    m = memory(os.getpid())
    assert m.rss_kib > 0 and m.pss_kib > 0
    assert m.anon_kib + m.file_kib <= m.rss_kib <= m.peak_rss_kib
    assert m.ring_kib == 0
    assert m.as_mib()["rss_mib"] == round(m.rss_kib / 1024, 1)


def test_wakeups_count_every_threads_sleeps():
    before = wakeups(os.getpid())
    napper = threading.Thread(target=lambda: [threading.Event().wait(0.01) for _ in range(20)])
    napper.start()
    while napper.is_alive():  # counted while the thread is there: an ended thread leaves /proc
        after = wakeups(os.getpid())
        threading.Event().wait(0.05)
    napper.join()
    assert after - before >= 5
