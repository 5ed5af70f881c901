"""Rules files: merging user files onto the shipped ones, and line-precise problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules_helpers import KEYWORD_RULE, write

from ebpfguard.detect.engine import RulesError, load_rules

def test_new_rule_from_a_user_file_resolves_list_references(tmp_path):
    rules = load_rules([write(tmp_path, "a.yaml", KEYWORD_RULE)])
    rule = rules.get("test.keyword")
    assert rule.params == {"words": ("alpha", "beta"), "other": 1}
    assert rule.enabled and rule.severity == "low" and len(rule.allow) == 2


def test_later_file_extends_lists_and_overrides_only_given_fields(tmp_path):
    base = write(tmp_path, "a.yaml", KEYWORD_RULE)
    override = write(tmp_path, "b.yaml", """\
        lists:
          words: [gamma, alpha]
        rules:
          - id: test.keyword
            enabled: false
            params: {other: 2}
    """)
    rule = load_rules([base, override]).get("test.keyword")
    assert rule.params == {"words": ("alpha", "beta", "gamma"), "other": 2}
    assert rule.enabled is False
    assert rule.description == "test rule"


def problems_of(*files: Path) -> list[str]:
    with pytest.raises(RulesError) as caught:
        load_rules(files)
    return caught.value.problems


def test_unknown_rule_id_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "a.yaml", """\
        rules:
          - id: test.keyword
            enabled: false
          - id: no.such.detector
            description: x
            severity: low
            tags: []
            evidence: []
    """)
    problems = problems_of(path)
    assert any(p.startswith(f"{path}:4: rule 'no.such.detector': no detector is registered") for p in problems)


def test_every_problem_is_reported_at_its_own_line(tmp_path):
    path = write(tmp_path, "a.yaml", KEYWORD_RULE.replace("severity: low", "severity: urgent")
                 .replace('"@words"', '"@nowhere"') + "    colour: red\n")
    problems = problems_of(path)
    assert f"{path}:8: rule 'test.keyword': `severity` must be one of info, low, medium, high, critical" in problems
    assert f"{path}:11: rule 'test.keyword': params refers to unknown list '@nowhere'" in problems
    assert any(p.startswith(f"{path}:13: unknown top-level key 'colour'") for p in problems)


def test_yaml_syntax_error_gives_the_line(tmp_path):
    path = write(tmp_path, "a.yaml", "rules:\n  - id: x\n    tags: [a, b\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:4: not valid YAML")


def test_duplicate_key_is_an_error_not_a_silent_overwrite(tmp_path):
    path = write(tmp_path, "a.yaml", "rules:\n  - id: test.keyword\n    enabled: true\n    enabled: false\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:4: not valid YAML: duplicate key 'enabled'")


def test_detector_param_errors_are_found_at_load_time(tmp_path):
    path = write(tmp_path, "a.yaml", KEYWORD_RULE.replace('{words: "@words", other: 1}', "{other: 1}"))
    problems = problems_of(path)
    assert problems == [f"{path}:11: rule 'test.keyword': invalid params: 'words'"]


def test_unknown_condition_name_in_allow(tmp_path):
    path = write(tmp_path, "a.yaml", KEYWORD_RULE.replace("allow: [trusted,", "allow: [untrusted,"))
    assert problems_of(path) == [f"{path}:12: rule 'test.keyword': `allow` names unknown condition 'untrusted'"]


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path):
    [problem] = problems_of(tmp_path / "missing.yaml")
    assert "cannot read rules file" in problem
