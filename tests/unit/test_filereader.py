"""The process file reader against a /proc-like tree: paths resolved as the process would
(symlinks and `..` followed inside its root, relative paths from its working directory),
never out of that root, never opening a FIFO or device, bounded in size and time. A read that
cannot wait is done on the caller's thread and says the same as the worker's."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from ebpfguard.detect.filereader import ExecFiles, MountTable, ProcessRootReader, ReadResult, TimedReader


@pytest.fixture
def proc(tmp_path):
    """tmp/proc/42/{root,cwd} are links, as in /proc, to a root file system and a directory in it."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "work").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "work" / "config.json").write_text('{"pools": []}')
    (rootfs / "etc" / "miner.json").write_text("absolute")
    (tmp_path / "host-secret").write_text("secret")
    (tmp_path / "proc" / "42").mkdir(parents=True)
    os.symlink(rootfs, tmp_path / "proc" / "42" / "root")
    os.symlink(rootfs / "work", tmp_path / "proc" / "42" / "cwd")
    return tmp_path


def read(proc, path, limit=1 << 20) -> ReadResult:
    """The worker's read; the caller's-thread read, when it takes the path, must say the same."""
    reader = ProcessRootReader(str(proc / "proc"))
    result = reader.read(42, path, limit)
    quick = reader.read_quick(42, path, limit)  # after the full read: its dentries are cached
    assert quick is None or quick == result
    return result


def test_relative_paths_are_read_from_the_process_working_directory(proc):
    assert read(proc, "config.json").data == b'{"pools": []}'
    assert read(proc, "./config.json").data == b'{"pools": []}'
    assert read(proc, "../work/config.json").data == b'{"pools": []}'


def test_absolute_paths_are_read_inside_the_process_root(proc):
    assert read(proc, "/etc/miner.json").data == b"absolute"


def test_symlinks_and_dotdot_are_followed_as_the_process_would(proc):
    work = proc / "rootfs" / "work"
    os.symlink("real.json", work / "config-link.json")
    (work / "real.json").write_text("real")
    os.symlink("/etc/miner.json", work / "absolute-link.json")
    os.symlink("../etc", work / "etc-dir")
    assert read(proc, "config-link.json").data == b"real"
    assert read(proc, "absolute-link.json").data == b"absolute"  # "/" is the process's root
    assert read(proc, "etc-dir/miner.json").data == b"absolute"
    assert read(proc, "/work/../etc/./miner.json").data == b"absolute"


def test_nothing_outside_the_process_root_is_reachable(proc):
    work = proc / "rootfs" / "work"
    os.symlink(proc / "host-secret", work / "host-link")
    os.symlink("../../host-secret", work / "climb-link")
    assert read(proc, "../../../../host-secret").why == "missing"
    assert read(proc, "host-link").data is None
    assert read(proc, "climb-link").data is None
    assert read(proc, "/../host-secret").data is None


def test_reads_are_bounded_and_say_so(proc):
    result = read(proc, "config.json", limit=4)
    assert (result.data, result.truncated) == (b'{"po', True)


def test_what_is_not_read_says_why(proc):
    work = proc / "rootfs" / "work"
    os.mkfifo(work / "pipe")
    os.symlink("loop", work / "loop")
    assert read(proc, "pipe") == ReadResult(None, "not a regular file")
    assert read(proc, "/etc") == ReadResult(None, "not a regular file")
    assert read(proc, "absent.json") == ReadResult(None, "missing")
    assert read(proc, "loop").why == "symlink loop or magic link"
    assert ProcessRootReader(str(proc / "proc")).read(43, "config.json").why == "process gone"
    assert read(proc, "bad\0name").why == "not a path"


def test_a_read_that_does_not_return_in_time_is_counted_and_the_caller_goes_on():
    release = threading.Event()

    class Stuck:
        def read(self, pid, path, limit=0):
            release.wait()
            return ReadResult(b"late")

    timeouts = []
    reader = TimedReader(Stuck(), workers=1, timeout_s=0.05, on_timeout=lambda: timeouts.append(1))
    started = time.monotonic()
    assert reader.read(1, "x").why == "timed out after 50 ms"
    # The one worker is still held: the next read is refused at once, not queued behind it.
    assert reader.read(1, "y").why.startswith("busy")
    assert time.monotonic() - started < 2
    assert len(timeouts) == 2
    release.set()


def test_all_the_reads_of_one_exec_share_its_budget():
    class Slow:
        def read(self, pid, path, limit=0):
            time.sleep(0.5 if path == "slow" else 0)
            return ReadResult(path.encode())

    spent = []
    files = ExecFiles(TimedReader(Slow(), timeout_s=5.0), budget_s=0.2, on_budget_spent=lambda: spent.append(1))
    event = {"process": {"pid": 1}}
    assert files(event, "a").data == b"a"
    assert files(event, "slow").why.startswith("timed out")  # cut at what was left of 0.2 s
    assert files(event, "c").why == "not read: this exec's read budget is spent"
    assert spent == [1]
    assert files({"process": {"pid": 1}}, "d").data == b"d"  # a new event, a new budget


def test_a_cached_path_to_a_local_file_is_read_on_the_callers_thread(proc):
    reader = ProcessRootReader(str(proc / "proc"))
    reader.read(42, "config.json")  # looked up once: now in the dentry cache
    assert reader.read_quick(42, "config.json") == ReadResult(b'{"pools": []}')


def test_a_file_on_a_file_system_that_could_wait_is_left_to_the_worker():
    # procfs is not one whose reads are known not to wait (nor are FUSE, NFS, overlay...).
    reader = ProcessRootReader()
    assert reader.read(os.getpid(), "/proc/self/status").data is not None
    assert reader.read_quick(os.getpid(), "/proc/self/status") is None


def test_a_path_the_dentry_cache_does_not_hold_is_left_to_the_worker(proc):
    reader = ProcessRootReader(str(proc / "proc"))
    name = f"never-looked-up-{uuid.uuid4().hex}"
    assert reader.read_quick(42, name) is None  # resolving it would have to ask the file system
    assert reader.read(42, name).why == "missing"
    assert reader.read_quick(42, name) == ReadResult(None, "missing")  # now a cached negative entry


def test_the_mount_table_names_each_mounts_file_system(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "31 22 0:27 / /tmp/fuse rw,nosuid master:3 - fuse.sshfs host:/ rw,user_id=0\n"
        "40 22 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    )
    table = MountTable(str(mountinfo))
    assert [table.fstype(22), table.fstype(31), table.fstype(40), table.fstype(99)] == [
        "ext4", "fuse.sshfs", "cgroup2", None]


def test_a_quick_read_is_answered_without_a_worker_and_one_that_could_wait_takes_one():
    class Reader:
        def __init__(self):
            self.full = []

        def read_quick(self, pid, path, limit=0):
            return ReadResult(b"quick") if path == "local" else None

        def read(self, pid, path, limit=0):
            self.full.append(threading.current_thread().name)
            return ReadResult(b"full")

    reader = Reader()
    timed = TimedReader(reader, workers=1, timeout_s=5.0)
    assert timed.read(1, "local").data == b"quick"
    assert reader.full == []
    assert timed.read(1, "fuse").data == b"full"
    assert reader.full == ["ebpfguard-read-0"]


def test_a_quick_read_that_fails_is_an_outcome_not_an_exception():
    class Broken:
        def read_quick(self, pid, path, limit=0):
            raise UnicodeEncodeError("utf-8", path, 0, 1, "surrogates not allowed")

        def read(self, pid, path, limit=0):
            raise AssertionError("not reached")

    assert TimedReader(Broken(), workers=1).read(1, "\ud800") == ReadResult(None, "error: UnicodeEncodeError")
