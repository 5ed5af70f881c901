"""Condition rules in rules files: loading, lint positions, exceptions, `rules test`, replay."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from rules_helpers import MINER_SCORE_CONDITION_ONLY, write

from ebpfguard.cli import main
from ebpfguard.detect.engine import DetectionEngine, RulesError, load_rules

REPO = Path(__file__).resolve().parents[2]
USER_RULES = REPO / "docs" / "examples" / "user-rules.yaml"
STREAM = REPO / "tests" / "corpus" / "user_rules_stream.jsonl"
# Where the recording's trainer was installed (tests/kernel/test_user_rules_live.py made it).
RECORDED_TRAINER_DIR = "/tmp/i21-kt/opt-trainer0"

ISSUE_RULES = """\
    rules:
      - id: user.smtp_from_sandbox
        description: a sandbox opens a connection to a mail server
        condition: kind = "connect" and dport = 25 and sandbox.name glob "sandbox-*"
        severity: medium
        output: "%sandbox.name connected to port 25"
      - id: user.curl_in_sandbox
        description: a sandbox runs curl
        condition: kind = "exec" and process.comm = "curl" and sandbox.name startswith "sandbox-"
        severity: low
"""


def problems_of(*files: Path) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules(files)
    return caught.value.problems


def replay(events, *rule_files: Path) -> list[dict]:
    data = "".join(json.dumps(event) + "\n" for event in events)
    args = [arg for path in rule_files for arg in ("--rules", str(path))]
    result = CliRunner().invoke(main, ["replay", "-", *args], input=data)
    assert result.exit_code in (0, 1), result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_the_issues_two_rules_load_lint_clean_and_fire(tmp_path):
    path = write(tmp_path, "issue.yaml", ISSUE_RULES)
    lint = CliRunner().invoke(main, ["rules", "lint", str(path)])
    assert (lint.exit_code, lint.stdout.strip()) == (0, f"{path}: ok")
    alerts = replay([
        {"kind": "connect", "daddr": "192.0.2.1", "dport": 25, "sandbox": {"name": "sandbox-a"}},
        {"kind": "connect", "daddr": "192.0.2.1", "dport": 25, "sandbox": {"name": "host"}},
        {"kind": "exec", "filename": "/usr/bin/curl", "argv": ["curl", "https://example.com"], "sandbox": {"name": "sandbox-b"}},
        {"kind": "exec", "filename": "/usr/bin/curl", "argv": ["curl", "https://example.com"], "sandbox": {"name": "ci-1"}},
    ], path)
    assert [(a["rule"], a["sandbox"]["name"], a["severity"]) for a in alerts] == [
        ("user.smtp_from_sandbox", "sandbox-a", "medium"), ("user.curl_in_sandbox", "sandbox-b", "low")]
    assert alerts[0]["summary"] == "sandbox-a connected to port 25"
    assert alerts[0]["evidence"] == {"dport": 25, "sandbox.name": "sandbox-a"}
    assert alerts[1]["summary"] == "a sandbox runs curl"


def test_example_rules_lint_clean_and_their_examples_pass():
    lint = CliRunner().invoke(main, ["rules", "lint", str(USER_RULES)])
    assert lint.exit_code == 0, lint.stdout
    result = CliRunner().invoke(main, ["rules", "test", str(USER_RULES)])
    assert result.exit_code == 0, result.stdout
    header, *rows, total = result.stdout.splitlines()
    assert header.split() == ["RULE", "EXAMPLE", "EXPECT", "GOT", "RESULT"]
    assert len(rows) == 15 and all(row.split()[-1] == "pass" for row in rows)
    assert {row.split()[0] for row in rows} == {
        "user.smtp_from_sandbox", "user.curl_in_sandbox", "user.download_piped_to_shell",
        "user.gpu_not_trainer", "user.stratum_outside_allowlist"}
    assert total == "15 passed, 0 failed"


def test_replay_of_a_recorded_stream_raises_exactly_the_expected_alerts(tmp_path):
    site = write(tmp_path, "site.yaml", f"lists:\n  trainer_dirs: [{RECORDED_TRAINER_DIR}]\n")
    events = [json.loads(line) for line in STREAM.read_text().splitlines()]
    alerts = [a for a in replay(events, USER_RULES, site) if a["rule"].startswith("user.")]
    sandboxes = {a["rule"]: a["sandbox"]["name"] for a in alerts}
    assert Counter(a["rule"] for a in alerts) == Counter([
        "user.download_piped_to_shell", "user.curl_in_sandbox", "user.smtp_from_sandbox",
        "user.gpu_not_trainer", "user.stratum_outside_allowlist"])
    assert sandboxes["user.download_piped_to_shell"] == sandboxes["user.curl_in_sandbox"]
    assert len(set(sandboxes.values())) == 4
    stratum = next(a for a in alerts if a["rule"] == "user.stratum_outside_allowlist")
    assert stratum["severity"] == "critical" and stratum["evidence"]["flow.stratum.variant"] == "stratum1"
    # Without the site's list the trainer is not excepted: one more GPU alert.
    without_site = [a for a in replay(events, USER_RULES) if a["rule"] == "user.gpu_not_trainer"]
    assert len(without_site) == 2


def test_a_wrong_field_fails_lint_at_its_line_and_column(tmp_path):
    path = write(tmp_path, "bad.yaml", """\
        rules:
          - id: user.curl
            description: x
            severity: low
            condition: kind = "exec" and process.cmm = "curl"
          - id: user.folded
            description: x
            severity: low
            condition: >-
              kind = "exec"
              and process.argv regx "x"
            output: "%sandbox.nam ran it"
          - id: user.quoted
            description: x
            severity: low
            condition: "kind = \\"exec\\" and dport = 3"
    """)
    result = CliRunner().invoke(main, ["rules", "lint", str(path)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{path}:5:34: rule 'user.curl': unknown field 'process.cmm' (did you mean 'process.comm'?)",
        f"{path}:11:24: rule 'user.folded': expected an operator after 'process.argv', found `regx`",
        f"{path}:12:14: rule 'user.folded': unknown field %sandbox.nam (did you mean 'sandbox.name'?)",
        f"{path}:16:37: rule 'user.quoted': dport is only on connect, flow, dns events, never on exec: this is always false",
    ]


def test_macros_are_checked_where_they_are_defined(tmp_path):
    path = write(tmp_path, "m.yaml", """\
        macros:
          good: kind = "exec"
          bad: process.nope = "x"
          loop: loop
        rules:
          - id: user.m
            description: x
            severity: low
            condition: good and bad
    """)
    assert problems_of(path) == [
        f"{path}:3:8: macro 'bad': unknown field 'process.nope' (did you mean 'process.pid'?)",
        f"{path}:4:9: macro 'loop': macro 'loop' refers to itself (through loop)",
        f"{path}:9:25: rule 'user.m': macro 'bad' has errors (see its definition)",
    ]


def test_condition_rules_and_detector_rules_keep_their_own_keys(tmp_path):
    path = write(tmp_path, "keys.yaml", """\
        rules:
          - id: miner.exec
            output: "%process.comm"
          - id: miner.stratum
            condition: kind = "flow"
          - id: user.no_severity
            description: x
            condition: kind = "exec"
            params: {a: 1}
    """)
    problems = problems_of(path)
    assert f"{path}:3: rule 'miner.exec': `output` belongs to condition rules (with a `condition`), not to detector rules" in problems
    assert f"{path}:5: rule 'miner.stratum': this id is a detector's rule: give the condition rule an id of its own" in problems
    assert f"{path}:6: rule 'user.no_severity': a new rule needs `severity`" in problems
    assert f"{path}:9: rule 'user.no_severity': `params` belongs to detector rules; a condition rule uses lists and macros" in problems


def test_exceptions_drop_matching_tuples_and_later_files_add_more(tmp_path):
    base = write(tmp_path, "base.yaml", """\
        rules:
          - id: user.exec
            description: any exec in a sandbox
            condition: kind = "exec" and sandbox.name glob "sandbox-*"
            severity: low
            exceptions:
              - name: tools
                fields: [process.comm, sandbox.name]
                comps: ["in", glob]
                values:
                  - [[make, cc], sandbox-build-*]
    """)
    more = write(tmp_path, "more.yaml", """\
        rules:
          - id: user.exec
            exceptions:
              - name: one_sandbox
                fields: sandbox.name
                values: [sandbox-lab]
    """)
    events = [
        {"kind": "exec", "argv": ["make"], "sandbox": {"name": "sandbox-build-1"}},  # excepted
        {"kind": "exec", "argv": ["make"], "sandbox": {"name": "sandbox-2"}},  # alerts
        {"kind": "exec", "argv": ["ls"], "sandbox": {"name": "sandbox-build-1"}},  # alerts
        {"kind": "exec", "argv": ["ls"], "sandbox": {"name": "sandbox-lab"}},  # excepted by more.yaml
    ]
    assert [a["event"]["argv"] for a in replay(events, base)] == [["make"], ["ls"], ["ls"]]
    assert [(a["event"]["argv"], a["sandbox"]["name"]) for a in replay(events, base, more)] == [
        (["make"], "sandbox-2"), (["ls"], "sandbox-build-1")]


def test_bad_exceptions_are_reported(tmp_path):
    path = write(tmp_path, "exc.yaml", """\
        rules:
          - id: user.exec
            description: x
            condition: kind = "exec"
            severity: low
            exceptions:
              - name: wrong
                fields: [process.comm, dport]
                values:
                  - [make, "25"]
    """)
    [problem] = problems_of(path)
    assert problem == (f"{path}:6: rule 'user.exec': exception 'wrong': dport is a number: compare it with a "
                       f"number, not '25' (exception at {path}:7)")


def test_rules_test_prints_failures_and_exits_one(tmp_path):
    path = write(tmp_path, "t.yaml", """\
        rules:
          - id: user.curl
            description: curl
            condition: kind = "exec" and process.comm = "curl"
            severity: low
            examples:
              - event: {kind: exec, argv: [curl, x]}
                expect: none
              - event: {kind: exec, argv: [wget, x]}
                expect: none
              - event: {kind: exec}
                expect: alert
    """)
    result = CliRunner().invoke(main, ["rules", "test", str(path)])
    assert result.exit_code == 1
    rows = result.stdout.splitlines()[1:-1]
    assert [row.split()[1:] for row in rows] == [
        [f"{path}:7", "none", "alert", "FAIL"],
        [f"{path}:9", "none", "none", "pass"],
        [f"{path}:11", "alert", "error:", "a", "`exec`", "event", "needs", "argv", "FAIL"],
    ]
    assert result.stdout.splitlines()[-1] == "1 passed, 2 failed"


def test_a_condition_without_a_kind_runs_on_every_kind_and_one_with_a_kind_only_on_it(tmp_path):
    path = write(tmp_path, "k.yaml", """\
        rules:
          - id: user.anything_in_lab
            description: x
            condition: sandbox.name = "lab"
            severity: info
          - id: user.lab_connects
            description: x
            condition: kind = "connect" and sandbox.name = "lab"
            severity: info
    """)
    engine = DetectionEngine(load_rules([path]))
    fired = {kind: sorted(a["rule"] for a in engine.process({"kind": kind, "daddr": "192.0.2.1", "dport": 1,
                                                             "sandbox": {"name": "lab"}, "process": {}}))
             for kind in ("connect", "exit", "made-up")}
    assert fired == {"connect": ["user.anything_in_lab", "user.lab_connects"], "exit": ["user.anything_in_lab"],
                     "made-up": ["user.anything_in_lab"]}


def test_disabled_detector_rules_still_provide_their_fields(tmp_path):
    path = write(tmp_path, "d.yaml", MINER_SCORE_CONDITION_ONLY)
    alerts = replay([{"kind": "exec", "argv": ["xmrig", "--donate-level", "1"]}], path)
    assert [a["rule"] for a in alerts] == ["user.lowish_miner_score"]
    assert alerts[0]["evidence"] == {"exec.miner.score": 6}
