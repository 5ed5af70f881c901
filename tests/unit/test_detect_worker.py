"""Detection off the main loop: events are written at once whatever detection is doing, the
alerts found come back to the main loop in order, a stuck detection cannot hold up the
agent's stop, and slow events are counted."""

from __future__ import annotations

import select
import struct
import threading
import time

from ebpfguard.detect.worker import DetectWorker
from ebpfguard.kernel.events import C
from test_pipeline import header, lines, make_pipeline


def exit_record(host, pid):
    return header(C["EVENT_EXIT"], host.sandbox_id, pid, b"sh") + struct.pack("<iI", 0, C["EXIT_HAS_CODE"])


def test_events_are_written_while_detection_is_stuck_and_alerts_follow(tmp_path):
    release = threading.Event()

    def detect(event):
        release.wait()
        return [{"kind": "alert", "rule": "test.rule", "severity": "high", "sandbox": event["sandbox"]}]

    pipeline, host, out, stats = make_pipeline(tmp_path, detect)
    worker = DetectWorker(pipeline.run_detect, max_queue=10, budget_s=60,
                          on_overrun=lambda: None, on_full=lambda: stats.drop("detect", "queue_full"))
    pipeline.submit = worker.submit
    pipeline.on_record(exit_record(host, 100))
    pipeline.on_record(exit_record(host, 101))
    assert [e["kind"] for e in lines(out)] == ["exit", "exit"]  # written before any detection ends
    release.set()
    assert worker.stop(timeout_s=10) == 0
    pipeline.write_alerts(worker.take_alerts())  # as the agent's main loop does
    assert [e["kind"] for e in lines(out)] == ["exit", "exit", "alert", "alert"]
    assert stats.snapshot().alerts_written == 2


def test_a_full_detection_queue_drops_and_counts_instead_of_blocking(tmp_path):
    release = threading.Event()
    pipeline, host, out, stats = make_pipeline(tmp_path, lambda event: release.wait() and [])
    worker = DetectWorker(pipeline.run_detect, max_queue=2, budget_s=60, handoff_interval_s=0,
                          on_overrun=lambda: None, on_full=lambda: stats.drop("detect", "queue_full"))
    pipeline.submit = worker.submit
    for pid in range(100, 110):  # one record per drain, each handed over as the agent does
        pipeline.on_record(exit_record(host, pid))
        worker.flush()
    assert len(lines(out)) == 10
    assert stats.snapshot().dropped[("detect", "queue_full")] >= 7
    release.set()
    worker.stop(timeout_s=10)


def test_stop_returns_in_bounded_time_whatever_an_event_holds():
    never = threading.Event()
    worker = DetectWorker(lambda event: never.wait() and [], max_queue=10, budget_s=60,
                          on_overrun=lambda: None, on_full=lambda: None)
    for n in range(3):
        worker.submit({"n": n})
    started = time.monotonic()
    undone = worker.stop(timeout_s=0.2)
    assert time.monotonic() - started < 5  # generous: the bound is 0.2 s
    assert undone == 2  # one is being matched, two never started


def test_an_event_past_its_budget_is_counted_as_an_overrun():
    overruns = []
    worker = DetectWorker(lambda event: time.sleep(event["sleep_s"]) or [], max_queue=10, budget_s=0.05,
                          on_overrun=lambda: overruns.append(1), on_full=lambda: None)
    worker.submit({"sleep_s": 0.2})
    worker.submit({"sleep_s": 0})
    worker.stop(timeout_s=10)
    assert overruns == [1]


def test_an_idle_worker_sleeps_until_woken_then_polls_on_its_own_thread():
    polled_on = []

    def poll():
        polled_on.append(threading.current_thread().name)
        return [{"kind": "alert", "n": len(polled_on)}] if len(polled_on) == 1 else []

    worker = DetectWorker(lambda event: [], max_queue=10, budget_s=60, on_overrun=lambda: None,
                          on_full=lambda: None, poll=poll)
    time.sleep(0.3)
    assert polled_on == []  # nothing asked for it
    worker.wake()
    deadline = time.monotonic() + 10
    while not polled_on and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop(timeout_s=10)
    assert polled_on[0] == "ebpfguard-detect"
    assert worker.take_alerts() == [{"kind": "alert", "n": 1}]


def test_a_drain_is_handed_over_as_one_batch_in_event_order():
    seen = []
    worker = DetectWorker(lambda event: seen.append(event["n"]) or [], max_queue=100, budget_s=60,
                          on_overrun=lambda: None, on_full=lambda: None)
    for n in range(5):
        worker.submit({"n": n})
    assert not worker._bulk  # nothing crosses threads until the drain ends
    worker.flush()
    worker.stop(timeout_s=10)
    assert seen == [0, 1, 2, 3, 4]


def test_an_urgent_event_goes_at_once_and_its_alerts_make_the_alerts_fd_readable():
    started, release = threading.Event(), threading.Event()

    def detect(event):
        started.set()
        release.wait()
        return [{"alert": event["kind"]}]

    worker = DetectWorker(detect, max_queue=100, budget_s=60, on_overrun=lambda: None, on_full=lambda: None,
                          handoff_interval_s=3600, urgent_kinds=frozenset({"exec"}))
    worker.submit({"kind": "connect"})
    worker.flush()  # the first hand-over goes at once
    assert started.wait(10)
    worker.submit({"kind": "connect"})
    worker.flush()
    assert worker.holds_back()  # bulk, within the hand-over interval: it waits for a later turn
    worker.submit({"kind": "exec"})
    worker.flush()  # urgent: handed over at once, with the bulk event before it
    assert not worker.holds_back()
    assert select.select([worker.alerts_fd], [], [], 0)[0] == []  # nothing found yet
    release.set()
    assert select.select([worker.alerts_fd], [], [], 30)[0] == [worker.alerts_fd]
    deadline = time.monotonic() + 10
    taken = []
    while len(taken) < 3 and time.monotonic() < deadline:
        taken += worker.take_alerts()
    assert taken == [{"alert": "connect"}, {"alert": "exec"}, {"alert": "connect"}]  # the urgent one first
    time.sleep(0.2)  # past the worker's last word on the batch
    assert worker.take_alerts() == []
    assert select.select([worker.alerts_fd], [], [], 0)[0] == []  # taken: no longer readable
    worker.stop(timeout_s=10)


def test_under_a_stream_of_events_hand_overs_are_spaced_and_a_held_batch_goes_next():
    seen = []
    worker = DetectWorker(lambda event: seen.append(event["n"]) or [], max_queue=100, budget_s=60,
                          on_overrun=lambda: None, on_full=lambda: None, handoff_interval_s=3600)
    worker.submit({"n": 0})
    worker.flush()  # a lone event goes at once
    worker.submit({"n": 1})
    worker.flush()  # within the interval of the last hand-over: held
    assert worker._pending == [{"n": 1}]
    worker.handoff_interval_s = 0  # the interval has passed
    worker.submit({"n": 2})
    worker.flush()
    worker.stop(timeout_s=10)
    assert seen == [0, 1, 2]


def test_stop_hands_over_a_held_batch():
    seen = []
    worker = DetectWorker(lambda event: seen.append(event["n"]) or [], max_queue=100, budget_s=60,
                          on_overrun=lambda: None, on_full=lambda: None, handoff_interval_s=3600)
    for n in range(3):
        worker.submit({"n": n})
        worker.flush()
    assert worker.stop(timeout_s=10) == 0
    assert seen == [0, 1, 2]


def test_urgent_events_are_detected_before_a_backlog_of_bulk_ones_each_stream_in_order():
    seen = []
    first = threading.Event()
    release = threading.Event()

    def detect(event):
        if event["n"] == 0:
            first.set()
            release.wait()
        seen.append(event["n"])
        return []

    worker = DetectWorker(detect, max_queue=100, budget_s=60, on_overrun=lambda: None, on_full=lambda: None,
                          handoff_interval_s=0, urgent_kinds=frozenset({"exec"}))
    worker.submit({"kind": "connect", "n": 0})
    worker.flush()
    assert first.wait(10)  # the worker is inside the first bulk event
    for n in (1, 2, 3):
        worker.submit({"kind": "connect", "n": n})
    worker.submit({"kind": "exec", "n": 4})
    worker.submit({"kind": "exec", "n": 5})
    worker.flush()
    release.set()
    worker.stop(timeout_s=10)
    assert seen == [0, 4, 5, 1, 2, 3]


def test_the_main_loop_resting_between_turns_is_told_of_alerts_at_once():
    release = threading.Event()
    worker = DetectWorker(lambda event: [{"alert": event["n"]}] if release.wait() and event["n"] else [],
                          max_queue=100, budget_s=60, on_overrun=lambda: None, on_full=lambda: None,
                          urgent_kinds=frozenset({"exec"}))
    worker.submit({"kind": "exec", "n": 0})
    worker.flush()
    release.set()
    assert not worker.wait_for_alerts(0.2)  # detected, found nothing: the rest runs out
    worker.submit({"kind": "exec", "n": 1})
    worker.flush()
    assert worker.wait_for_alerts(30)  # long before the timeout: as the batch is done
    assert worker.take_alerts() == [{"alert": 1}]
    assert not worker.wait_for_alerts(0)  # told once per batch of alerts taken
    worker.stop(timeout_s=10)


def detected_on(seen):
    """A detect that notes each event's number and the thread it ran on, with an alert each."""
    def detect(event):
        seen.append((event["n"], threading.current_thread().name))
        return [{"alert": event["n"]}]

    return detect


def quick_worker(detect, **kwargs):
    return DetectWorker(detect, max_queue=100, budget_s=60, on_overrun=lambda: None, on_full=lambda: None,
                        urgent_kinds=frozenset({"exec"}), **kwargs)


def test_a_batch_whose_detection_cannot_wait_is_detected_on_the_main_loop_with_its_alerts_ready_at_once():
    seen = []
    worker = quick_worker(detected_on(seen), may_wait=lambda event: False)
    worker.submit({"kind": "connect", "n": 0})
    worker.submit({"kind": "exec", "n": 1})
    worker.flush()
    here = threading.current_thread().name
    assert seen == [(1, here), (0, here)]  # urgent first, as on the worker
    assert worker.take_alerts() == [{"alert": 1}, {"alert": 0}]  # no wait: the loop writes them this turn
    assert not worker.holds_back()
    worker.stop(timeout_s=10)


def test_from_an_event_whose_detection_may_wait_the_batch_goes_to_the_worker_in_order():
    seen = []
    worker = quick_worker(detected_on(seen), may_wait=lambda event: event.get("reads", False))
    for n in range(3):
        worker.submit({"kind": "exec", "n": n, "reads": n == 1})
    worker.flush()
    worker.stop(timeout_s=10)
    assert seen == [(0, threading.current_thread().name), (1, "ebpfguard-detect"), (2, "ebpfguard-detect")]


def test_while_the_worker_holds_events_the_next_batches_follow_them_there():
    seen = []
    release = threading.Event()

    def detect(event):
        if event["n"] == 0:
            release.wait()
        return detected_on(seen)(event)

    worker = quick_worker(detect, may_wait=lambda event: event["n"] == 0)
    worker.submit({"kind": "exec", "n": 0})
    worker.flush()
    worker.submit({"kind": "exec", "n": 1})
    worker.flush()  # cannot wait, but the worker still has event 0: after it, not beside it
    release.set()
    worker.stop(timeout_s=10)
    assert seen == [(0, "ebpfguard-detect"), (1, "ebpfguard-detect")]


def test_a_slow_batch_on_the_main_loop_sends_detection_to_the_worker_for_a_while(monkeypatch):
    import ebpfguard.detect.worker as worker_module

    monkeypatch.setattr(worker_module, "INLINE_BACKOFF_S", 0.5)
    seen = []

    def detect(event):
        if event["n"] == 0:
            time.sleep(worker_module.INLINE_BUDGET_S * 4)  # a command line a sandbox made slow to score
        return detected_on(seen)(event)

    worker = quick_worker(detect, may_wait=lambda event: False)
    for n in (0, 1):
        worker.submit({"kind": "exec", "n": n})
    worker.flush()  # 0 here: past the budget, so 1 goes to the worker
    worker.submit({"kind": "exec", "n": 2})
    worker.flush()  # and so does the next batch, within the back-off
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.6)  # the back-off is over
    worker.submit({"kind": "exec", "n": 3})
    worker.flush()
    worker.stop(timeout_s=10)
    here = threading.current_thread().name
    assert seen == [(0, here), (1, "ebpfguard-detect"), (2, "ebpfguard-detect"), (3, here)]


def test_an_event_the_may_wait_check_fails_on_goes_to_the_worker():
    seen = []
    worker = quick_worker(detected_on(seen), may_wait=lambda event: 1 / 0)
    worker.submit({"kind": "exec", "n": 0})
    worker.flush()
    worker.stop(timeout_s=10)
    assert seen == [(0, "ebpfguard-detect")]


def test_late_alerts_are_collected_after_a_batch_detected_on_the_main_loop():
    polled_on = []

    def poll():
        polled_on.append(threading.current_thread().name)
        return [{"alert": "late"}] if len(polled_on) == 1 else []

    worker = quick_worker(lambda event: [], may_wait=lambda event: False, poll=poll)
    worker.submit({"kind": "exec", "n": 0})
    worker.flush()
    assert worker.take_alerts() == [{"alert": "late"}]
    assert polled_on == [threading.current_thread().name]
    worker.stop(timeout_s=10)
