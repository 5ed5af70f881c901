"""What the viewer prints: escaped, one line, the columns of design.md; and its filters."""

from __future__ import annotations

import itertools

from ebpfguard.watch.format import plain_line, safe, summary
from ebpfguard.watch.model import EventStore, Filter


def exec_event(argv, sandbox="sandbox-a", comm="sh", retval=0) -> dict:
    return {"kind": "exec", "time": "2026-11-27T20:47:21.700204030Z", "sandbox": {"name": sandbox},
            "process": {"pid": 42, "comm": comm, "argv": argv}, "filename": argv[0], "retval": retval}


def test_no_control_character_or_terminal_escape_survives():
    hostile = "a\x1b[2J\x1b]0;owned\x07b\r\n\x9b31m\u202eevil\u2028\x7f"
    shown = safe(hostile)
    assert all(ch.isprintable() for ch in shown)
    assert "\\x1b[2J" in shown and "\\u202e" in shown


def test_plain_line_has_time_sandbox_pid_comm_kind_summary_and_no_raw_escape():
    line = plain_line(exec_event(["/bin/echo", "clear\x1b[2Jme"], comm="ec\x1bho"))
    assert line == "20:47:21.700 sandbox-a 42 ec\\x1bho exec /bin/echo 'clear\\x1b[2Jme'"


def test_a_failed_exec_says_so_before_the_command():
    assert summary(exec_event(["sh", "-c", "x"], retval=-2)).startswith("failed ENOENT: sh")


def test_escape_and_tamper_say_what_was_tried_and_where():
    assert summary({"kind": "escape", "what": "cgroup_move", "to_cgroup": "/"}) == "cgroup_move /"
    assert summary({"kind": "tamper", "what": "bpf", "bpf_cmd": "BPF_PROG_LOAD"}) == "bpf BPF_PROG_LOAD"


def test_alert_summary_leads_with_severity_and_rule():
    alert = {"kind": "alert", "rule": "miner.exec", "severity": "high", "summary": "miner started: kworker"}
    assert summary(alert) == "HIGH miner.exec: miner started: kworker"


def test_filter_words_and_fields_all_have_to_match():
    events = [exec_event(["xmrig"], "sandbox-a"), exec_event(["ls"], "sandbox-b"),
              {"kind": "alert", "rule": "miner.exec", "severity": "high", "summary": "xmrig",
               "sandbox": {"name": "sandbox-a"}, "process": {"pid": 1}}]
    assert [e for e in events if Filter.parse("sandbox:sandbox-a xmrig").matches(e)] == [events[0], events[2]]
    assert [e for e in events if Filter.parse("kind:exec").matches(e)] == events[:2]
    assert [e for e in events if Filter.parse("rule:miner.*").matches(e)] == [events[2]]
    assert [e for e in events if Filter.parse("", alerts_only=True).matches(e)] == [events[2]]


def test_store_counts_per_sandbox_keeps_the_newest_and_totals_what_the_agent_skipped():
    ticks = itertools.count()
    store = EventStore(capacity=3, clock=lambda: float(next(ticks)))
    store.add([exec_event(["a"], "s1"), exec_event(["b"], "s2"), {"kind": "skipped", "missed": 7}])
    store.add([exec_event(["c"], "s1"), exec_event(["d"], "s1")])
    assert (store.sandboxes["s1"].events, store.sandboxes["s2"].events) == (3, 1)
    assert store.skipped_by_agent == 7
    newest = store.newest(Filter(), 10)
    assert [seq for seq, _ in newest] == [5, 4, 3]
    assert store.get(4)["process"]["argv"] == ["c"] and store.get(1) is None


def test_summary_line_says_what_the_kernel_held_back_and_lost():
    event = {"kind": "summary", "held_back": {"connect": 900}, "lost": {"net": 3}, "window_s": 1.0}
    assert summary(event) == "held back connect 900, lost net 3 in 1.0s"


def test_an_action_reads_as_what_was_done_to_what_and_why():
    from ebpfguard.watch.format import summary

    done = {"kind": "action", "action": "block-flow", "rule": "miner.stratum", "outcome": "done",
            "target": {"sandbox": "sandbox-a", "flow_id": 8231, "daddr": "203.0.113.9", "dport": 3333}}
    assert summary(done) == "block-flow flow 8231 to 203.0.113.9:3333 for miner.stratum: done"
    refused = {"kind": "action", "action": "freeze", "rule": "tunnel.other", "outcome": "refused",
               "reason": "host processes are acted on only when response.sandboxes lists host",
               "target": {"sandbox": "host"}}
    assert summary(refused).endswith("refused (host processes are acted on only when response.sandboxes lists host)")
