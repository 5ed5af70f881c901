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
