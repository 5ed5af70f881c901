"""How the agent's main loop shares the CPUs with the workloads it watches: as a SCHED_BATCH task.

A batch task has the weight of any nice-0 process, so a sandbox keeping every CPU busy (a
miner) cannot starve it. What it gives up is wakeup preemption: the kernel does not let a
batch task that wakes take the CPU from the task running there; it runs when that task
blocks, at the next tick, or on an idle CPU. The main loop wakes about a hundred times a
second in an exec storm (its turns), and each wakeup could cut into the storm's time slice;
as a batch task it waits its turn instead (docs/performance.md: 5 to 10 µs less per exec).

Only the main loop: the detection worker is handed batches, and the two threads pass the
interpreter lock back and forth, so a worker that waited for a tick at every hand-over fell
behind a flat-out storm (every thread batch: the soak lost 20,039 records, not 29, and its
detection backlog took RSS to 172 MiB).
"""

from __future__ import annotations

import os


def run_this_thread_as_batch() -> bool:
    """Make the calling thread SCHED_BATCH at its current weight; False where the platform
    has no SCHED_BATCH. Threads it starts from now on inherit the policy. Lowering a thread's
    policy needs no privilege, but a seccomp profile may refuse the call (OSError)."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return False
    os.sched_setscheduler(0, policy, os.sched_param(0))
    return True


def run_this_thread_as_normal() -> None:
    """Make the calling thread SCHED_OTHER again: for a thread the main loop starts after it
    became a batch task (the executable scanner's, started at the first scan), which would
    otherwise inherit the policy and make every hand-over of the interpreter lock to it wait
    for a tick. Raising a policy back to SCHED_OTHER needs no privilege either; where the
    call is refused the thread stays as it is."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        pass
