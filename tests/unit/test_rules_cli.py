"""`ebpfguard rules list` and `rules lint FILE` (exit 0 clean, 1 problems, 2 unreadable)."""

from __future__ import annotations

from click.testing import CliRunner

from ebpfguard.cli import main


def test_rules_list_shows_id_severity_enabled_and_description():
    result = CliRunner().invoke(main, ["rules", "list"])
    assert result.exit_code == 0
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "SEVERITY", "ENABLED"]
    assert any(row.split()[:3] == ["miner.exec", "high", "yes"] for row in rows)


def test_lint_clean_file_exits_zero(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("lists:\n  miner_binaries: [mybadminer]\nrules:\n  - id: miner.exec\n    allow: {sandboxes: [sandbox-lab-*]}\n")
    result = CliRunner().invoke(main, ["rules", "lint", str(path)])
    assert (result.exit_code, result.stdout.strip()) == (0, f"{path}: ok")


def test_lint_reports_each_problem_with_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rules:\n  - id: miner.exec\n    enabled: maybe\n  - id: miner.nope\n    description: x\n")
    result = CliRunner().invoke(main, ["rules", "lint", str(path)])
    assert result.exit_code == 1
    assert f"{path}:3: rule 'miner.exec': `enabled` must be true or false" in result.stdout
    assert f"{path}:4: rule 'miner.nope': no detector is registered" in result.stdout


def test_lint_unreadable_file_exits_two(tmp_path):
    assert CliRunner().invoke(main, ["rules", "lint", str(tmp_path / "missing.yaml")]).exit_code == 2
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    assert CliRunner().invoke(main, ["rules", "lint", str(binary)]).exit_code == 2


def test_shipped_rules_lint_clean():
    from ebpfguard.detect.rulefile import shipped_rule_files

    for path in shipped_rule_files():
        assert CliRunner().invoke(main, ["rules", "lint", str(path)]).exit_code == 0


def test_lint_and_replay_report_deep_nesting_with_its_line_not_a_traceback(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("lists:\n  x: " + "[" * 3000 + "]" * 3000 + "\n")
    result = CliRunner().invoke(main, ["rules", "lint", str(path)])
    assert (result.exit_code, result.stdout.strip()) == (1, f"{path}:2: nested more than 32 levels deep")
    events = tmp_path / "events.jsonl"
    events.write_text('{"kind": "exec", "process": {"argv": ["true"]}}\n')
    replayed = CliRunner().invoke(main, ["replay", "--rules", str(path), str(events)])
    assert replayed.exit_code == 2 and "nested more than 32 levels deep" in replayed.stderr
    assert replayed.exception is None or isinstance(replayed.exception, SystemExit)


def test_lint_stops_a_list_past_its_bound_with_a_clear_problem(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("lists:\n  mining_pool_domains:\n" + "".join(f"    - p{n}.example\n" for n in range(200_000)))
    result = CliRunner().invoke(main, ["rules", "lint", str(path)])
    assert result.exit_code == 1
    assert f"{path}:100003: a list with more than 100000 entries" in result.stdout


def test_lint_time_grows_linearly_with_a_list_of_pool_domains(tmp_path):
    # Both files are under the bound; merging lists and building detectors is linear in
    # them (it was quadratic: a 200k list ran past 60 s). Ratio, not time: a busy host.
    import time

    def lint_seconds(entries: int) -> float:
        path = tmp_path / f"pools{entries}.yaml"
        path.write_text("lists:\n  mining_pool_domains:\n" + "".join(f"    - p{n}.example\n" for n in range(entries)))
        started = time.process_time()
        assert CliRunner().invoke(main, ["rules", "lint", str(path)]).exit_code == 0
        return time.process_time() - started

    small, large = lint_seconds(5_000), lint_seconds(40_000)
    assert large < small * 8 * 3  # 8x the entries: linear is ~8x; quadratic would be ~64x
