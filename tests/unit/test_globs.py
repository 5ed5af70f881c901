"""Glob sets over sandbox text: answers kept in a bounded memory give the same verdicts."""

from ebpfguard.globs import MAX_REMEMBERED_ANSWERS, GlobSet


def test_a_glob_set_answers_alike_from_memory_and_stays_bounded():
    names = GlobSet(["kworker*", "*xmrig*"])
    for _ in range(2):  # the second round answers from memory
        assert names.match("kworker/0:1") and names.match("my-xmrig-2") and not names.match("true")
    for n in range(3 * MAX_REMEMBERED_ANSWERS):
        names.match(f"name-{n}")
    assert len(names._answers) <= MAX_REMEMBERED_ANSWERS
    assert names.match("kworker/0:1") and not names.match("true")
