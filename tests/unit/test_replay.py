"""`ebpfguard replay` per design.md: alerts only, defaults, line-numbered problems, exit codes."""

from __future__ import annotations

import base64
import json

from click.testing import CliRunner

from ebpfguard.cli import main

MINER = {"kind": "exec", "argv": ["xmrig", "-o", "pool.supportxmr.com:443", "--donate-level", "1"]}


def replay(lines, *args):
    data = b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)
    return CliRunner().invoke(main, ["replay", "-", *args], input=data)


def test_alerts_only_on_stdout_with_defaults_and_unknown_fields_kept():
    result = replay([{**MINER, "ticket": "T-1"}, {"kind": "exec", "argv": ["ls", "-l"]}])
    assert result.exit_code == 1
    [line] = result.stdout.splitlines()
    alert = json.loads(line)
    assert alert["kind"] == "alert" and alert["rule"] == "miner.exec"
    assert alert["sandbox"] == {"name": "unknown"}
    assert alert["event"]["ticket"] == "T-1"
    assert alert["event"]["argv"] == MINER["argv"]


def test_no_alert_exits_zero_with_empty_stdout():
    result = replay([{"kind": "exec", "argv": ["ls"]}, {"kind": "dns", "query": "example.com"}])
    assert (result.exit_code, result.stdout) == (0, "")


def test_malformed_lines_are_reported_with_their_numbers_and_skipped():
    result = replay([MINER, b"{not json", b"[1, 2]", {"kind": "exec"}, {"argv": ["x"]}, b"\xff\xfe", MINER])
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2
    for number in (2, 3, 4, 5, 6):
        assert f"line {number}: " in result.stderr
    assert "line 6: not UTF-8" in result.stderr


def test_a_huge_line_is_an_error_not_a_crash():
    huge = json.dumps({"kind": "exec", "argv": ["x" * (2 << 20)]}).encode()
    result = replay([huge, MINER])
    assert result.exit_code == 1
    assert "line 1: longer than" in result.stderr


def test_alert_and_action_lines_are_skipped():
    result = replay([{"kind": "alert", "rule": "miner.exec"}, {"kind": "action", "action": "freeze"}])
    assert (result.exit_code, result.stdout) == (0, "")


def test_no_parsable_line_or_unreadable_file_exits_two(tmp_path):
    assert replay([b"garbage", b"{"]).exit_code == 2
    assert replay([]).exit_code == 2
    assert CliRunner().invoke(main, ["replay", str(tmp_path / "missing.jsonl")]).exit_code == 2


def test_output_is_ascii_so_argv_cannot_forge_lines_or_escape_the_terminal():
    evil = {"kind": "exec", "argv": ["xmrig", "\n{\"kind\": \"alert\"}\x1b[2J", "caf\u00e9"]}
    result = replay([evil])
    [line] = result.stdout.splitlines()
    assert line.isascii() and "\x1b" not in line


def test_repeats_of_one_process_alert_once_but_events_without_time_never_dedupe():
    timed = {**MINER, "time": "2024-05-01T00:00:00Z", "process": {"pid": 9}}
    assert len(replay([timed, {**timed, "time": "2024-05-01T00:00:10Z"}]).stdout.splitlines()) == 1
    assert len(replay([MINER, MINER]).stdout.splitlines()) == 2


def test_config_allowlist_and_user_rules_apply(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("detect:\n  allow:\n    - {rules: [miner.*], sandboxes: [sandbox-lab-*]}\n")
    event = {**MINER, "sandbox": {"name": "sandbox-lab-1"}}
    assert replay([event], "--config", str(config)).exit_code == 0
    off = tmp_path / "off.yaml"
    off.write_text("rules:\n  - id: miner.exec\n    enabled: false\n")
    assert replay([MINER], "--rules", str(off)).exit_code == 0


def test_bad_rules_file_is_a_usage_error_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: miner.exec\n    severity: loud\n")
    result = replay([MINER], "--rules", str(bad))
    assert result.exit_code == 2
    assert f"{bad}:3: rule 'miner.exec': `severity` must be one of" in result.stderr


def test_flow_events_are_classified_and_bad_flows_reported():
    stratum = base64.b64encode(b'{"id": 1, "method": "mining.subscribe", "params": []}\n').decode()
    result = replay([{"kind": "flow", "direction": "egress", "dport": 3333, "payload_b64": stratum},
                     {"kind": "flow", "direction": "sideways", "dport": 3333, "payload_b64": stratum},
                     {"kind": "flow", "direction": "egress", "dport": 3333, "payload_b64": "not base64!"}])
    assert result.exit_code == 1
    [alert] = [json.loads(line) for line in result.stdout.splitlines()]
    assert alert["rule"] == "miner.stratum" and alert["evidence"]["dport"] == 3333
    assert "line 2: `direction` must be egress or ingress" in result.stderr
    assert "line 3: `payload_b64` must be a base64 string" in result.stderr
