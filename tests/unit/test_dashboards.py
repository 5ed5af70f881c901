"""The Grafana dashboard and the Prometheus rules: generated, valid, and tested by promtool."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
sys.path.insert(0, str(DASHBOARDS))

import generate  # noqa: E402
import queries  # noqa: E402
import schema  # noqa: E402

from ebpfguard.outputs.metrics import METRICS  # noqa: E402


def test_regenerating_the_dashboard_gives_the_committed_file():
    assert generate.render() == queries.DASHBOARD.read_text(), "run: python dashboards/generate.py"


def test_committed_dashboard_is_valid_by_grafanas_schema():
    assert schema.problems(queries.load_dashboard()) == []


def _break(mutate):
    dashboard = copy.deepcopy(queries.load_dashboard())
    mutate(dashboard)
    return dashboard


def _first(dashboard: dict, panel_type: str) -> dict:
    return next(p for p in dashboard["panels"] if p["type"] == panel_type)


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: _first(d, "stat")["gridPos"].update(h="four"), "grid_pos.h: 'four' is not an integer"),
    (lambda d: _first(d, "timeseries").update(titel="typo"), "titel: not in the schema"),
    (lambda d: d.update(graphTooltip=7), "graph_tooltip: 7 is not one of"),
    (lambda d: _first(d, "timeseries")["targets"][0].update(expr=5), "expr: 5 is not a string"),
    (lambda d: _first(d, "timeseries")["options"]["legend"].update(displayMode="huge"), "display_mode: 'huge'"),
    (lambda d: _first(d, "stat")["fieldConfig"]["defaults"]["thresholds"].update(mode="relative"), "'relative'"),
    (lambda d: d["templating"]["list"][1].update(refresh="sometimes"), "refresh: 'sometimes'"),
], ids=["grid-type", "unknown-key", "enum", "expr-type", "panel-option-enum", "thresholds", "variable"])
def test_schema_check_rejects_a_broken_dashboard(mutate, expected):
    found = schema.problems(_break(mutate))
    assert any(expected in problem for problem in found), found


def test_schema_check_rejects_what_is_not_a_dashboard():
    assert schema.problems([]) == ["a dashboard is a JSON object"]


def _names_used(expr: str) -> set[str]:
    """Metric and recording-rule names an expression reads."""
    return set(re.findall(r"\b(ebpfguard[_:][a-z0-9_:]+|up)\b", expr))


def test_every_query_and_rule_reads_only_metrics_that_exist():
    rules = queries.rule_expressions(queries.load_rules())
    exposed = set()
    for spec in METRICS:
        exposed.add(spec.name)
        if spec.type == "histogram":
            exposed |= {spec.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    known = exposed | {name for name in rules if ":" in name} | {"up"}
    expressions = [*queries.dashboard_queries(queries.load_dashboard()), *rules.values()]
    used = set().union(*(_names_used(e) for e in expressions))
    assert used - known == set()
    assert "ebpfguard:alerts:increase5m" in used


def test_every_alerting_rule_has_a_promtool_unit_test():
    alerts = {name for name in queries.rule_expressions(queries.load_rules()) if ":" not in name}
    tested = set(re.findall(r"alertname: (\w+)", queries.RULES_TEST.read_text()))
    assert alerts == tested


def test_promtool_check_rules_passes():
    checked = subprocess.run(["promtool", "check", "rules", str(queries.RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_unit_tests_of_the_alerting_rules_pass():
    tested = subprocess.run(["promtool", "test", "rules", queries.RULES_TEST.name],
                            cwd=queries.RULES_TEST.parent, capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
