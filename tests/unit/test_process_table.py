"""The process table: lineage, bounds, and honesty about what it does not know."""

from ebpfguard.enrich.proctable import CLONE_PARENT, ProcessInfo, ProcessTable


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
