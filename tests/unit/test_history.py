"""The per-sandbox history behind `ebpfguard report` and the runner client: what it keeps,
how it bounds what a sandbox can make it keep, and the verdict it gives."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from ebpfguard.cli import main
from ebpfguard.outputs.history import HistoryBounds, SandboxHistory, history_from_events
from ebpfguard.outputs.report import build_report, process_tree, render_markdown, render_text

RECORDED = Path(__file__).resolve().parent.parent / "tui" / "recorded.jsonl"


def event(kind, sandbox="sandbox-a", pid=10, ppid=1, argv=("sh",), time="2026-11-29T10:00:00.000000000Z", **extra):
    return {"kind": kind, "time": time, "sandbox": {"name": sandbox},
            "process": {"pid": pid, "ppid": ppid, "comm": argv[0], "exe": f"/bin/{argv[0]}", "argv": list(argv)},
            **extra}


def alert(rule, severity, sandbox="sandbox-a", pid=11, trigger=None, time="2026-11-29T10:00:01.000000000Z"):
    return {"kind": "alert", "time": time, "rule": rule, "severity": severity, "summary": f"{rule} fired",
            "sandbox": {"name": sandbox}, "process": {"pid": pid, "comm": "x", "argv": ["x"]},
            "evidence": {"score": 5}, "tags": ["T1496"], "event": trigger or {"kind": "exec"}}


def test_a_sandbox_that_only_ran_ls_is_clean():
    history = SandboxHistory()
    history.write(event("exec", argv=("ls", "-l"), retval=0))
    history.write(event("exit", exit_code=0))
    report = build_report(history.get("sandbox-a"))
    assert report["verdict"] == "clean"
    assert report["alerts"] == [] and report["processes"][0]["argv"] == ["ls", "-l"]


def test_alerts_flag_the_sandbox_with_each_rule_and_its_highest_severity():
    history = SandboxHistory()
    history.write(alert("miner.exec", "high"))
    history.write(alert("miner.exec", "critical", time="2026-11-29T10:00:02.000000000Z"))
    history.write(alert("tunnel.ssh_remote_forward", "high"))
    report = build_report(history.get("sandbox-a"))
    assert report["verdict"] == "flagged"
    assert report["rules"] == [{"rule": "miner.exec", "severity": "critical", "count": 2},
                               {"rule": "tunnel.ssh_remote_forward", "severity": "high", "count": 1}]


def test_the_process_tree_puts_the_miner_under_the_shell_that_started_it():
    history = SandboxHistory()
    history.write(event("exec", pid=10, ppid=1, argv=("sh", "-c", "./kworker"), retval=0))
    history.write(event("exec", pid=11, ppid=10, argv=("./kworker",), retval=0,
                        time="2026-11-29T10:00:00.500000000Z"))
    tree = process_tree(build_report(history.get("sandbox-a"))["processes"])
    assert [(depth, p["pid"]) for depth, p in tree] == [(0, 10), (1, 11)]


def test_destinations_carry_the_names_dns_answered_for_them():
    history = SandboxHistory()
    history.write(event("dns", query="pool.example.net", response=True,
                        answers=[{"name": "pool.example.net", "type": "A", "ttl": 60, "value": "10.9.9.9"}]))
    history.write(event("connect", daddr="10.9.9.9", dport=3333, retval=-115))
    history.write(event("connect", daddr="10.9.9.9", dport=3333, retval=-111))
    [dest] = build_report(history.get("sandbox-a"))["connections"]
    assert dest["names"] == ["pool.example.net"]
    assert (dest["connects"], dest["failed"]) == (2, 1)


def test_host_events_are_not_kept_unless_configured():
    history = SandboxHistory()
    history.write(event("exec", sandbox="host", retval=0))
    assert history.get("host") is None
    with_host = SandboxHistory(HistoryBounds(include_host=True))
    with_host.write(event("exec", sandbox="host", retval=0))
    assert with_host.get("host") is not None


def test_every_bound_holds_and_what_it_pushed_out_is_counted():
    bounds = HistoryBounds(max_sandboxes=5, max_processes=3, max_connections=2, max_alerts=2, argv_chars=10)
    history = SandboxHistory(bounds)
    for n in range(10_000):  # short-lived sandboxes, one process each
        history.write(event("exec", sandbox=f"sandbox-{n}", pid=n, argv=("x" * 100,), retval=0))
    for n in range(10):
        history.write(event("connect", pid=1, daddr=f"10.0.0.{n}", dport=80, retval=0))
        history.write(alert("miner.exec", "high"))
    assert len(history) == 5
    assert history.evicted["sandboxes"] == 10_000 - 5 + 1  # and sandbox-a pushed one more out
    record = history.get("sandbox-a")
    assert len(record.processes) <= 3 and len(record.connections) == 2 and len(record.alerts) == 2
    assert record.evicted["connections"] == 8 and record.evicted["alerts"] == 8
    kept = history.get("sandbox-9999").processes
    assert all(len("".join(p["argv"])) <= 10 and p["argv_cut"] for p in kept.values())


def test_a_sandbox_is_kept_for_its_retention_after_its_last_process_exits():
    now = [0.0]
    history = SandboxHistory(HistoryBounds(retention_s=60.0), clock=lambda: now[0])
    history.write(event("exec", sandbox="sandbox-done", retval=0))
    history.write(event("exec", sandbox="sandbox-live", retval=0))
    history.write(event("exit", sandbox="sandbox-done", exit_code=0))
    now[0] = 59.0
    assert history.expire() == 0
    now[0] = 61.0
    assert history.expire() == 1
    assert history.get("sandbox-done") is None
    assert history.get("sandbox-live") is not None  # quiet, but a process of it still runs


def test_text_and_markdown_escape_what_a_sandbox_wrote():
    history = SandboxHistory()
    history.write(event("exec", argv=("sh", "-c", "\x1b[2J| `rm` *x*"), retval=0))
    report = build_report(history.get("sandbox-a"))
    text = render_text(report)
    assert "\x1b" not in text and "\\x1b[2J" in text
    markdown = render_markdown(report)
    assert "\\|" in markdown and "\\`rm\\`" in markdown and "\x1b" not in markdown


def test_history_from_an_events_file_skips_and_reports_bad_lines():
    stream = io.BytesIO(b"not json\n" + json.dumps(event("exec", retval=0)).encode() + b"\n")
    err = io.StringIO()
    history = history_from_events(stream, HistoryBounds(), err)
    assert history.get("sandbox-a") is not None
    assert "line 1" in err.getvalue()


def test_report_from_a_recorded_stream_is_flagged_with_both_rules_and_exits_1():
    result = CliRunner().invoke(main, ["report", "sandbox-rl-train-7", "--from", str(RECORDED), "--format", "json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    assert report["sandbox"] == "sandbox-rl-train-7" and report["verdict"] == "flagged"
    assert {r["rule"] for r in report["rules"]} == {"miner.exec", "egress.internal"}
    assert set(report) >= {"sandbox", "verdict", "alerts", "processes", "connections"}


def test_report_of_a_sandbox_absent_from_the_file_exits_2():
    result = CliRunner().invoke(main, ["report", "sandbox-never", "--from", str(RECORDED)])
    assert result.exit_code == 2
    assert "sandbox-never" in result.output


def test_report_without_an_agent_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["report", "sandbox-a", "--control-socket", str(tmp_path / "none.sock")])
    assert result.exit_code == 2
    assert "no agent" in result.output


def test_fields_of_the_wrong_type_are_counted_not_raised():
    history = SandboxHistory()
    history.write({"kind": "connect", "sandbox": {"name": "sandbox-a"}, "process": "not an object",
                   "daddr": "10.0.0.1", "dport": 80})
    history.write({"kind": "dns", "sandbox": {"name": "sandbox-a"}, "process": {"pid": 3}, "answers": 5})
    assert history.unusable == 2


def test_a_shell_that_execs_its_last_command_keeps_both_images_under_one_pid():
    history = SandboxHistory()
    history.write(event("exec", pid=10, argv=("sh", "-c", "x; exec ssh -R 0:h:22 h"), retval=0))
    history.write(event("exec", pid=11, ppid=10, argv=("./kworker",), retval=0))
    history.write(event("exec", pid=10, argv=("ssh", "-R", "0:h:22", "h"), retval=0))
    report = build_report(history.get("sandbox-a"))
    shell = next(p for p in report["processes"] if p["pid"] == 10)
    assert [i["argv"][0] for i in shell["images"]] == ["sh", "ssh"]
    assert "sh -c x; exec ssh -R 0:h:22 h ⇒ ssh -R 0:h:22 h" in render_text(report)
