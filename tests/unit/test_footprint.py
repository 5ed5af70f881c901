"""Giving back the compiler's pages: real mappings of this test process, dropped and read back."""

from __future__ import annotations

import mmap
import re

from ebpfguard.kernel.footprint import TRIM_AFTER_CPU_S, parse_smaps, release_compiler_pages, releasable, trim_due

PAGE = mmap.PAGESIZE


def resident_kib(path: str) -> int:
    with open("/proc/self/smaps") as smaps:
        return sum(m.rss_kib for m in parse_smaps(smaps.read()) if m.path == path)


def test_clean_pages_of_a_library_are_dropped_and_read_back_unchanged(tmp_path):
    library = tmp_path / "libLLVM-test.so"
    content = bytes(range(256)) * (64 * PAGE // 256)
    library.write_bytes(content)
    with open(library, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    try:
        assert sum(mapped[i] for i in range(0, len(content), PAGE)) >= 0  # touch every page
        before = resident_kib(str(library))
        assert before >= 64 * PAGE // 1024
        dropped = release_compiler_pages(libraries=re.compile(re.escape(str(library))))
        assert dropped == before
        assert resident_kib(str(library)) == 0
        assert mapped[:] == content
    finally:
        mapped.close()


def test_a_library_mapping_that_was_written_is_left_alone(tmp_path):
    library = tmp_path / "libclang-test.so"
    library.write_bytes(b"\0" * 8 * PAGE)
    with open(library, "r+b") as f:
        mapped = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        mapped[0:5] = b"moved"  # a private copy now: dropping it would lose the write
        release_compiler_pages(libraries=re.compile(re.escape(str(library))))
        assert mapped[0:5] == b"moved"
    finally:
        mapped.close()


def test_relocated_read_only_pages_and_other_libraries_are_not_releasable():
    smaps = """\
7f0000000000-7f0000100000 r-xp 00000000 08:01 12 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                 900 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r--p 00100000 08:01 12 /usr/lib/x86_64-linux-gnu/libLLVM-14.so.1
Rss:                 300 kB
Anonymous:           120 kB
7f0000200000-7f0000300000 r-xp 00000000 08:01 13 /usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0
Rss:                 500 kB
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xp 00000000 08:01 14 /usr/lib/llvm-14/lib/libclang-cpp.so.14
Rss:                   0 kB
Anonymous:             0 kB
"""
    assert [(m.start, m.rss_kib) for m in releasable(parse_smaps(smaps))] == [(0x7F0000000000, 900)]


def test_the_compilers_are_bccs_llvm_and_clang_and_yara_x_not_the_libraries_the_agent_runs_on():
    from ebpfguard.kernel.footprint import COMPILER_LIBRARIES
    compilers = ["/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1", "/usr/lib/llvm-14/lib/libclang-cpp.so.14",
                 "/opt/venv/lib/python3.11/site-packages/yara_x/yara_x.abi3.so"]
    others = ["/usr/lib/x86_64-linux-gnu/libbcc.so.0.26.0", "/usr/lib/x86_64-linux-gnu/libc.so.6",
              "/usr/lib/x86_64-linux-gnu/libbpf.so.1.1.2", "/usr/bin/python3.11",
              "/opt/venv/lib/python3.11/site-packages/orjson/orjson.cpython-311-x86_64-linux-gnu.so"]
    assert [p for p in compilers + others if COMPILER_LIBRARIES.search(p)] == compilers


ARENAS_SCRIPT = """
import ctypes, sys, threading
from ebpfguard.kernel.footprint import one_malloc_arena
if sys.argv[1] == "one":
    assert one_malloc_arena()
def work():
    kept = [bytes(2000) for _ in range(2000)]  # past pymalloc's 512 bytes: glibc's malloc
    del kept
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas_after_threads(mode: str) -> int:
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT, mode], capture_output=True, text=True, check=True)
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


def test_threads_allocate_from_the_main_arena_once_limited_to_one():
    assert arenas_after_threads("default") > 1  # what glibc does by itself: an arena per thread
    assert arenas_after_threads("one") == 1


TRIM_SCRIPT = """
import time
from ebpfguard.kernel.footprint import keep_heap_trimmed, one_malloc_arena
def anon_kib():
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("RssAnon")))
one_malloc_arena()
blocks = [bytes(3000) for _ in range(20000)]  # 60 MB on glibc's heap (past pymalloc's 512 bytes)
kept = blocks[::50]  # a few live blocks all along the heap: nothing free at its top to shrink
del blocks
before = anon_kib()
keep_heap_trimmed(0.05)
time.sleep(0.5)
print(before, anon_kib())
"""


def test_the_trimming_thread_gives_the_heaps_free_pages_back():
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", TRIM_SCRIPT], capture_output=True, text=True, check=True)
    before, after = map(int, done.stdout.split())
    assert before - after > 40_000  # most of the 60 MB freed in the heap's middle came back


def test_an_agent_that_did_no_work_since_the_last_trim_is_not_trimmed_again():
    assert trim_due(TRIM_AFTER_CPU_S)  # a storm's work: its freed memory goes back
    assert not trim_due(TRIM_AFTER_CPU_S / 10)  # an idle agent's housekeeping frees nothing worth a trim
