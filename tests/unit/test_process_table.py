"""The process table: lineage, bounds, and honesty about what it does not know."""

import random

from ebpfguard.enrich.proctable import CLONE_PARENT, ProcessInfo, ProcessTable, SharedValues, argv_cost


def table(tmp_path, **kwargs):
    return ProcessTable(proc_root=str(tmp_path), **kwargs)  # an empty /proc: nothing to fall back on


def test_ancestry_is_nearest_parent_first_up_to_init(tmp_path):
    procs = table(tmp_path)
    procs.put(ProcessInfo(1, 0, "init", "/sbin/init"))
    procs.on_fork(1, 100, 0, "bash")
    procs.on_exec(100, "bash", "/bin/bash", ("bash",))
    procs.on_fork(100, 200, 0, "bash")
    procs.on_exec(200, "python3", "/usr/bin/python3", ("python3", "agent.py"))
    lineage = procs.lineage(200)
    assert lineage.ppid == 100 and lineage.complete
    assert [(a["pid"], a["comm"]) for a in lineage.ancestry] == [(100, "bash"), (1, "init")]


def test_fork_with_clone_parent_makes_a_sibling(tmp_path):
    procs = table(tmp_path)
    procs.put(ProcessInfo(1, 0, "init", None))
    procs.put(ProcessInfo(10, 1, "a", None))
    procs.on_fork(10, 11, CLONE_PARENT, "a")
    assert procs.lineage(11).ppid == 1


def test_a_missing_parent_marks_ancestry_incomplete_rather_than_guessing(tmp_path):
    procs = table(tmp_path)
    procs.put(ProcessInfo(300, 299, "x", None))
    lineage = procs.lineage(300)
    assert lineage.ppid == 299 and lineage.ancestry == [] and not lineage.complete
    assert not procs.lineage(12345).complete


def test_depth_bound_cuts_long_chains(tmp_path):
    procs = table(tmp_path, ancestry_depth=3)
    procs.put(ProcessInfo(1, 0, "init", None))
    for pid in range(2, 12):
        procs.on_fork(pid - 1, pid, 0, f"p{pid}")
    lineage = procs.lineage(11)
    assert [a["pid"] for a in lineage.ancestry] == [10, 9, 8] and not lineage.complete


def test_a_million_short_lived_pids_keep_the_table_at_its_bound(tmp_path):
    procs = table(tmp_path, max_processes=1000)
    procs.put(ProcessInfo(1, 0, "init", None))
    for pid in range(2, 1_000_002):
        procs.on_fork(1, pid, 0, "sh")
        procs.on_exit(pid)
    assert len(procs) == 1000


def test_seed_reads_a_proc_tree_with_odd_comm(tmp_path):
    pid_dir = tmp_path / "42"
    pid_dir.mkdir()
    (pid_dir / "stat").write_bytes(b"42 (we ird) (name) S 7 42 42 0 -1 0\n")
    (pid_dir / "cmdline").write_bytes(b"python3\0agent.py\0\xff\0")
    procs = table(tmp_path)
    assert procs.seed_from_proc() == 1
    info = procs.get(42)
    assert info.ppid == 7 and info.comm == "we ird) (name"
    assert info.argv == ("python3", "agent.py", "\\xff")


def test_long_command_lines_past_the_byte_bound_evict_the_oldest_processes(tmp_path):
    procs = table(tmp_path, max_argv_bytes=10_000)
    for pid in range(2, 202):
        procs.on_fork(1, pid, 0, "sh")
        procs.on_exec(pid, "sh", "/bin/sh", ("sh", "-c", f"{pid}:" + "x" * 2000))
    assert procs.argv_bytes <= 10_000
    assert len(procs) == 4  # five 2 KiB command lines would be over
    assert procs.get(201).argv[2].startswith("201:") and procs.get(197) is None


def test_a_command_line_many_processes_ran_is_kept_once_and_counted_once(tmp_path):
    procs = table(tmp_path, max_argv_bytes=10_000)
    argv = ("python3", "-c", "x" * 2000)
    for pid in range(2, 1002):
        procs.on_fork(1, pid, 0, "python3")
        procs.on_exec(pid, "python3", "/usr/bin/python3", tuple(list(argv)))  # a new tuple each time
    assert len(procs) == 1000
    assert procs.argv_bytes == argv_cost(argv)
    kept = {id(procs.get(pid).argv) for pid in range(2, 1002)} | {id(procs.get(pid).exe) for pid in range(2, 1002)}
    assert len(kept) == 2


def test_the_byte_count_follows_every_put_replacement_exit_and_eviction(tmp_path):
    procs = table(tmp_path, max_processes=50, max_argv_bytes=3_000)
    rng = random.Random(7)
    for _ in range(5000):
        pid = rng.randrange(2, 120)
        step = rng.randrange(4)
        if step == 0:
            procs.on_fork(rng.randrange(2, 120), pid, 0, "sh")
        elif step == 1:
            procs.on_exec(pid, "sh", "/bin/sh", ("sh", "-c", "y" * rng.randrange(0, 400)))
        elif step == 2:
            procs.on_exit(pid)
        else:
            procs.put(ProcessInfo(pid, 1, "p", None, ("p",) * rng.randrange(3)))
        held = {id(info.argv): info.argv for info in procs._procs.values() if info.argv is not None}
        assert procs.argv_bytes == sum(argv_cost(a) for a in held.values()) <= 3_000
        assert len(procs) <= 50


def test_shared_values_hold_at_most_their_capacity_then_start_afresh():
    share = SharedValues(capacity=3)
    first = share(tuple("ab"))
    assert share(tuple("ab")) is first
    for n in range(3):
        share(str(n) * 3)
    assert len(share._values) == 1  # the fourth distinct value cleared the first three
    again = tuple("ab")
    assert share(again) is again


def _walked(procs, pid):
    """The lineage read afresh from the table's entries (no remembered answers)."""
    entries = procs._procs
    me = entries.get(pid)
    if me is None or me.ppid is None:
        return (None, [], False)
    ancestry, seen, ppid = [], {pid}, me.ppid
    while ppid and ppid not in seen:
        if len(ancestry) >= procs.ancestry_depth or ppid not in entries:
            return (me.ppid, ancestry, False)
        parent = entries[ppid]
        ancestry.append({"pid": parent.pid, "comm": parent.comm, "exe": parent.exe})
        seen.add(ppid)
        ppid = parent.ppid
    return (me.ppid, ancestry, True)


def test_remembered_lineages_answer_as_a_fresh_walk_through_forks_execs_reuse_and_eviction(tmp_path):
    procs = table(tmp_path, max_processes=40, ancestry_depth=4)
    rng = random.Random(11)
    procs.put(ProcessInfo(1, 0, "init", "/sbin/init"))
    for step in range(20000):
        pid = rng.randrange(2, 60)
        action = rng.randrange(6)
        if action == 0:
            procs.on_fork(rng.choice([1, *list(procs._procs)[-8:]]), pid, rng.choice([0, CLONE_PARENT]), "sh")
        elif action == 1:
            procs.on_exec(pid, f"c{step % 7}", f"/bin/c{step % 5}", ("c",))
        elif action == 2:
            procs.on_exit(pid)
        elif action == 3:
            procs.put(ProcessInfo(pid, rng.randrange(0, 60), "p", None))
        for asked in (pid, *rng.sample(range(1, 60), 3)):
            got = procs.lineage(asked)
            assert (got.ppid, got.ancestry, got.complete) == _walked(procs, asked), (step, asked)


def started_by_init(tmp_path, *argv):
    """A table where pid 300, forked by init, exec'd `argv`."""
    procs = table(tmp_path)
    procs.put(ProcessInfo(1, 0, "init", None))
    procs.on_fork(1, 300, 0, "sh")
    procs.on_exec(300, argv[0].rsplit("/", 1)[-1], argv[0], argv)
    return procs


def test_a_live_process_holds_its_own_image_and_one_seen_exiting_without_forks_none(tmp_path):
    procs = started_by_init(tmp_path, "/bin/true")
    assert procs.image_holder(300) == 300
    assert procs.image_holder(301) == 301  # unknown to the table: /proc may still know it
    procs.on_exit(300)
    assert procs.image_holder(300) is None
    procs.on_fork(1, 300, 0, "sh")  # the pid reused
    assert procs.image_holder(300) == 300


def test_a_daemon_that_exited_at_once_is_held_by_the_child_it_forked(tmp_path):
    procs = started_by_init(tmp_path, "/tmp/updater", "--background")
    procs.on_fork(300, 301, 0, "updater")
    procs.on_exit(300)
    assert procs.image_holder(300) == 301


def test_a_double_fork_is_followed_to_the_grandchild(tmp_path):
    procs = started_by_init(tmp_path, "/tmp/updater")
    procs.on_fork(300, 301, 0, "updater")
    procs.on_exit(300)
    procs.on_fork(301, 302, 0, "updater")  # after setsid
    procs.on_exit(301)
    assert procs.image_holder(300) == 302


def test_a_child_that_ran_another_program_or_whose_pid_moved_on_holds_nothing(tmp_path):
    procs = started_by_init(tmp_path, "/bin/sh", "-c", "sleep 9")
    procs.on_fork(300, 301, 0, "sh")
    procs.on_exec(301, "sleep", "/bin/sleep", ("sleep", "9"))
    procs.on_exit(300)
    assert procs.image_holder(300) is None  # the child runs sleep now, not sh
    procs.on_exec(300, "x", "/tmp/x", ("/tmp/x",))  # pid 300 again, as another process
    procs.on_fork(300, 302, 0, "x")
    procs.on_exit(300)
    procs.on_exit(302)
    procs.on_fork(1, 302, 0, "cron")  # the child's pid, reused by another parent
    assert procs.image_holder(300) is None
