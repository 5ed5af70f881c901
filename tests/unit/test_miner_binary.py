"""miner.binary: executables judged by content with yara-x, cached, off the caller's thread."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from shipped_rules import context_for

from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.exescan import ExecutableGone, ExecutableScanner, compile_rules, open_process_executable
from ebpfguard.detect.miner_binary import MinerBinary, rules_path
from ebpfguard.detect.filereader import O_PATH, QUICK_FSTYPES, ExecFiles, ProcessRootReader, TimedReader, local_fstype

# What a stratum miner's binary holds (cpuminer-opt's util.c, XMRig's EthStratumClient.cpp),
# padded with filler as a linker lays out .rodata.
MINER_STRINGS = (b"\x7fELF" + b"\0" * 4096 + b"mining.subscribe\0mining.authorize\0mining.submit\0"
                 + b"stratum+tcp://%s:%d\0" + os.urandom(8192))
SHIPPED = compile_rules([rules_path("miner.yar")])


def opener_of_filename(event):
    """Opens the exec's filename: the fixture files stand in for /proc/<pid>/exe."""
    return os.open(event["filename"], os.O_RDONLY)


def scanner(**overrides) -> ExecutableScanner:
    options = dict(max_bytes=1 << 20, timeout_s=2, cache_entries=16, queue_size=16, open_executable=opener_of_filename)
    options.update(overrides)
    known = options.pop("known", ())
    return ExecutableScanner(options.pop("rules", SHIPPED), known, **options)


def exec_of(path: Path) -> dict:
    return {"kind": "exec", "filename": str(path), "argv": [path.name], "process": {"pid": 1}}


def test_a_renamed_stratum_miner_is_known_by_its_strings(tmp_path):
    binary = tmp_path / "updater"
    binary.write_bytes(MINER_STRINGS)
    verdict = scanner().verdict_for(exec_of(binary))
    assert verdict.rules == ("miner_stratum_client",) and verdict.is_miner
    assert verdict.sha256 == hashlib.sha256(MINER_STRINGS).hexdigest()


def test_method_names_without_a_stratum_scheme_do_not_match(tmp_path):
    library = tmp_path / "libjsonrpc.so"
    library.write_bytes(b"\0mining.subscribe\0mining.authorize\0https://example.com\0")
    assert not scanner().verdict_for(exec_of(library)).is_miner


@pytest.mark.parametrize("path", [sys.executable, shutil.which("ssh") or "/bin/sh", "/bin/sh"])
def test_ordinary_programs_are_not_miners(path):
    assert scanner(max_bytes=64 << 20).verdict_for({"filename": os.path.realpath(path)}).rules == ()


def test_the_yara_engine_library_itself_is_not_a_miner():
    import yara_x
    library = next(Path(yara_x.__file__).parent.glob("*.so"))
    assert not scanner(max_bytes=64 << 20).verdict_for({"filename": str(library)}).is_miner


def test_a_listed_release_hash_alerts_without_any_rule_matching(tmp_path):
    binary = tmp_path / "kworker"
    binary.write_bytes(b"\x7fELF nothing telling here")
    known = [hashlib.sha256(binary.read_bytes()).hexdigest()]
    verdict = scanner(known=known).verdict_for(exec_of(binary))
    assert verdict.rules == () and verdict.known_release and verdict.is_miner


def test_the_same_file_is_scanned_once_and_a_changed_file_again(tmp_path):
    binary = tmp_path / "x"
    binary.write_bytes(MINER_STRINGS)
    scan = scanner()
    for _ in range(3):
        assert scan.verdict_for(exec_of(binary)).is_miner
    assert (scan.scanned, scan.cache_hits) == (1, 2)
    binary.write_bytes(b"benign now")
    assert not scan.verdict_for(exec_of(binary)).is_miner
    assert scan.scanned == 2


def test_reads_stop_at_the_bound_and_then_no_hash_is_claimed(tmp_path):
    binary = tmp_path / "big"
    binary.write_bytes(b"\0" * 8192 + MINER_STRINGS)
    verdict = scanner(max_bytes=4096).verdict_for(exec_of(binary))
    assert verdict.scanned_bytes == 4096 and verdict.sha256 is None and not verdict.is_miner


def test_an_executable_that_cannot_be_opened_has_no_verdict(tmp_path):
    closed = scanner(open_executable=lambda event: None)
    assert closed.verdict_for(exec_of(tmp_path / "gone")) is None


def test_submit_returns_at_once_and_results_come_from_the_worker(tmp_path):
    binary = tmp_path / "svc"
    binary.write_bytes(MINER_STRINGS)
    scan = scanner()
    event = exec_of(binary)
    assert scan.submit(event)
    scan.wait_idle(timeout=10)
    [(same_event, verdict)] = scan.results()
    assert same_event is event and verdict.is_miner
    assert scan.results() == []


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    scan = scanner(queue_size=1, open_executable=lambda event: time.sleep(0.5))
    accepted = [scan.submit({"filename": "x"}) for _ in range(5)]
    assert accepted.count(False) >= 3 and scan.dropped == accepted.count(False)


def test_replay_builds_no_scanner_and_alerts_on_nothing():
    detector = MinerBinary(context_for("miner.binary"))
    assert detector.scanner is None
    assert list(detector.on_event({"kind": "exec", "argv": ["./updater"]})) == []
    assert list(detector.poll()) == []


def test_a_bad_hash_in_the_list_is_a_clear_error():
    with pytest.raises(ValueError, match="known_sha256"):
        MinerBinary(context_for("miner.binary", known_sha256=("abc",)))


def test_live_engine_wakes_its_caller_and_alerts_later_through_poll_on_a_user_rule_and_a_renamed_copy(tmp_path):
    """A real process, its executable read through /proc/<pid>/exe, a user's YARA file."""
    rule_file = tmp_path / "coreutils.yar"
    rule_file.write_text('rule test_coreutils_sleep { strings: $a = "GNU coreutils" $b = "nanosleep" '
                         'condition: $a and $b }\n')
    user_rules = tmp_path / "user.yaml"
    user_rules.write_text(f"lists:\n  miner_yara_files: [{rule_file}]\n")
    engine = DetectionEngine(load_rules([user_rules]), None, read_file=ExecFiles(TimedReader(ProcessRootReader()), budget_s=5.0))
    verdict_ready = threading.Event()
    engine.wake_on_late(verdict_ready.set)
    renamed = tmp_path / "updater"
    shutil.copy(shutil.which("sleep"), renamed)
    child = subprocess.Popen([str(renamed), "5"])
    try:
        event = {"kind": "exec", "time": "2026-01-01T00:00:00Z", "sandbox": {"name": "sandbox-a"},
                 "filename": str(renamed), "process": {"pid": child.pid, "exe": str(renamed), "argv": ["updater", "5"]}}
        assert engine.process(event) == []
        assert verdict_ready.wait(timeout=10)  # the scanner says when: nobody has to ask it over and over
        alerts = [a for a in engine.poll() if a["rule"] == "miner.binary"]
    finally:
        child.kill()
        child.wait()
    [alert] = alerts
    assert alert["event"] is event and alert["evidence"]["yara_rules"] == ["test_coreutils_sleep"]
    assert alert["evidence"]["path"] == str(renamed) and alert["severity"] == "high"


def test_an_executable_already_scanned_is_answered_on_the_callers_thread(tmp_path):
    """A real process: its executable's key told through an O_PATH /proc/<pid>/exe, no worker."""
    renamed = tmp_path / "updater"
    shutil.copy(shutil.which("sleep"), renamed)
    descriptor = os.open(renamed, O_PATH)
    try:
        # ext4 or tmpfs here; on a file system that could wait (overlay, FUSE) the worker opens
        # the file for every exec.
        local = local_fstype(descriptor) in QUICK_FSTYPES
    finally:
        os.close(descriptor)
    opened = []
    scan = scanner(open_executable=lambda event: opened.append(1) or open_process_executable(event))
    child = subprocess.Popen([str(renamed), "5"])
    try:
        event = {"kind": "exec", "filename": str(renamed), "process": {"pid": child.pid}}
        assert scan.submit(event)
        scan.wait_idle(timeout=10)
        [(_, first)] = scan.results()
        assert scan.submit(event)
        if not local:
            scan.wait_idle(timeout=10)
        [(same_event, again)] = scan.results()  # local: there before submit returned
    finally:
        child.kill()
        child.wait()
    assert same_event is event and again == first and (scan.scanned, scan.cache_hits) == (1, 1)
    assert opened == ([1] if local else [1, 1])


def test_an_exec_whose_process_already_exited_wakes_no_worker():
    child = subprocess.Popen(["true"])
    child.wait()
    opened = []
    scan = scanner(open_executable=lambda event: opened.append(1) or open_process_executable(event))
    assert scan.submit({"kind": "exec", "filename": "/bin/true", "process": {"pid": child.pid}})
    assert (scan._worker, scan.dropped, opened, scan.results()) == (None, 0, [], [])


def test_an_exec_the_agent_saw_exit_is_not_looked_up_in_proc():
    """The agent's process table knows the exit: no /proc lookup, no worker, nothing dropped."""
    peeked = []
    scan = scanner(peek=lambda event: peeked.append(event) or None)
    scan.image_holder = lambda pid: None if pid == 4242 else pid
    assert scan.submit({"kind": "exec", "filename": "/bin/true", "process": {"pid": 4242}})
    assert (peeked, scan._worker, scan.dropped, scan.results()) == ([], None, 0, [])


def test_an_exec_of_a_live_process_is_still_scanned_when_exits_are_known(tmp_path):
    miner = tmp_path / "updater"
    miner.write_bytes(MINER_STRINGS)
    scan = scanner()
    scan.image_holder = lambda pid: None if pid == 4242 else pid
    assert scan.submit(exec_of(miner))  # pid 1: not among the exited
    scan.wait_idle(timeout=10)
    [(_, verdict)] = scan.results()
    assert verdict.is_miner


def test_an_exec_whose_process_exited_is_scanned_through_the_daemon_it_forked(tmp_path):
    miner = tmp_path / "updater"
    miner.write_bytes(MINER_STRINGS)
    opened_pids = []
    scan = scanner(open_executable=lambda event: opened_pids.append(event["process"]["pid"]) or opener_of_filename(event),
                   peek=lambda event: None)
    scan.image_holder = {4242: 4243}.get  # 4242 exited; its child 4243 runs the same image
    event = {**exec_of(miner), "process": {"pid": 4242}}
    assert scan.submit(event)
    scan.wait_idle(timeout=10)
    [(reported, verdict)] = scan.results()
    assert verdict.is_miner and reported is event  # the alert is about the exec that started it
    assert opened_pids == [4243]


def test_a_daemons_alert_names_the_child_that_runs_the_miner(tmp_path):
    miner = tmp_path / "updater"
    miner.write_bytes(MINER_STRINGS)
    rule = MinerBinary(context_for("miner.binary", read_file=lambda event, path: None))
    rule.scanner.open_executable, rule.scanner.peek = opener_of_filename, lambda event: None
    rule.see_processes({4242: 4243, 5000: 5000}.get)
    for pid in (4242, 5000):
        rule.on_event({**exec_of(miner), "process": {"pid": pid}})
    rule.scanner.wait_idle(timeout=10)
    evidence = {event["process"]["pid"]: found.evidence for event, found in rule.poll()}
    assert evidence[4242]["daemon_pid"] == 4243
    assert "daemon_pid" not in evidence[5000]  # still running itself


def test_the_live_engine_hands_the_agents_process_table_to_the_scanner():
    engine = DetectionEngine(load_rules(), None, read_file=ExecFiles(TimedReader(ProcessRootReader()), budget_s=5.0))
    holder = {7: 7}.get
    engine.see_processes(holder)
    [rule] = [instance for instance in engine._instances if isinstance(instance, MinerBinary)]
    assert rule.scanner.image_holder is holder


def test_a_daemon_gone_from_proc_before_the_table_read_its_fork_is_scanned_once_it_has(tmp_path):
    miner = tmp_path / "updater"
    miner.write_bytes(MINER_STRINGS)

    def peek(event):
        if event["process"]["pid"] == 4242:
            raise ExecutableGone()  # the parent left /proc microseconds after its exec
        return None

    opened_pids = []
    scan = scanner(peek=peek, open_executable=lambda event: opened_pids.append(event["process"]["pid"])
                   or opener_of_filename(event))
    table = {4242: 4242}  # the records of its fork and exit are not read yet
    scan.image_holder = table.get
    event = {**exec_of(miner), "process": {"pid": 4242}}
    assert scan.submit(event)
    scan.retry_gone()
    assert opened_pids == []  # asked again, still not caught up: kept
    table[4242] = 4243  # now read: the child runs the image
    scan.retry_gone()
    scan.wait_idle(timeout=10)
    [(reported, verdict)] = scan.results()
    assert verdict.is_miner and reported is event and opened_pids == [4243]
    scan.retry_gone()
    assert not scan._gone  # done with it


def test_execs_waiting_for_the_table_are_pending_until_it_catches_up():
    def gone(event):
        raise ExecutableGone()

    scan = scanner(peek=gone)
    table = {4242: 4242, 4243: 4243}
    scan.image_holder = table.get
    assert not scan.awaits_retry()
    scan.submit({"kind": "exec", "filename": "/bin/true", "process": {"pid": 4242}})
    scan.submit({"kind": "exec", "filename": "/bin/true", "process": {"pid": 4243}})
    assert scan.awaits_retry()
    table[4242] = table[4243] = None
    scan.retry_gone()
    assert not scan.awaits_retry()


def test_an_exec_gone_alone_is_forgotten_once_the_table_saw_it_exit():
    def gone(event):
        raise ExecutableGone()

    scan = scanner(peek=gone)
    table = {4242: 4242}
    scan.image_holder = table.get
    scan.submit({"kind": "exec", "filename": "/bin/true", "process": {"pid": 4242}})
    table[4242] = None  # exited, no fork
    scan.retry_gone()
    assert (scan._gone, scan._worker, scan.results()) == (deque(), None, [])


def test_the_engine_asks_to_be_polled_again_while_an_exec_waits_for_the_process_table():
    """A real exec'd process, gone from /proc before the table read its exit."""
    engine = DetectionEngine(load_rules([]), None, read_file=ExecFiles(TimedReader(ProcessRootReader()), budget_s=5.0))
    child = subprocess.Popen(["true"])
    child.wait()
    table = {child.pid: child.pid}  # its exit not read yet
    engine.see_processes(lambda pid: table.get(pid))
    assert not engine.late_pending()
    event = {"kind": "exec", "time": "2026-01-01T00:00:00Z", "sandbox": {"name": "sandbox-a"},
             "filename": "/bin/true", "process": {"pid": child.pid, "exe": "/bin/true", "argv": ["true"]}}
    engine.process(event)
    assert engine.late_pending()
    table[child.pid] = None  # now read: it exited alone
    assert engine.poll() == []
    assert not engine.late_pending()
