"""The main loop as a batch task: a real child process, its real threads' policies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

# Runs in a child: the test process's own threads must keep their policy.
CHILD = textwrap.dedent("""
    import json, os, threading
    from ebpfguard.kernel.scheduling import run_this_thread_as_batch, run_this_thread_as_normal

    hold = threading.Event()
    worker = threading.Thread(target=hold.wait)
    worker.start()
    changed = run_this_thread_as_batch()
    later = threading.Thread(target=hold.wait)
    later.start()
    reset = threading.Event()
    def back_to_normal():
        run_this_thread_as_normal()
        reset.set()
        hold.wait()
    scanner = threading.Thread(target=back_to_normal)
    scanner.start()
    reset.wait()
    policies = {name: os.sched_getscheduler(tid) for name, tid in
                (("main", threading.get_native_id()), ("worker", worker.native_id), ("later", later.native_id),
                 ("scanner", scanner.native_id))}
    hold.set()
    print(json.dumps({"changed": changed, "policies": policies, "nice": os.nice(0),
                      "batch": os.SCHED_BATCH, "other": os.SCHED_OTHER}))
""")


def run_child() -> dict:
    return json.loads(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout)


def test_the_calling_thread_becomes_a_batch_task_and_the_threads_it_started_before_do_not():
    out = run_child()
    assert out["changed"] is True
    assert out["policies"]["main"] == out["batch"]
    assert out["policies"]["worker"] == out["other"]


def test_a_thread_started_by_a_batch_thread_inherits_its_policy():
    out = run_child()
    assert out["policies"]["later"] == out["batch"]


def test_a_batch_task_keeps_its_weight():
    """Batch gives up wakeup preemption only: the nice value, and so the CPU share, stay."""
    assert run_child()["nice"] == os.nice(0)


def test_a_thread_started_by_a_batch_thread_can_go_back_to_normal():
    out = run_child()
    assert out["policies"]["scanner"] == out["other"]
