"""Every PromQL expression the dashboard and the rules use, in a form Prometheus evaluates.

Tests send these to a real Prometheus (tests/kernel/test_metrics_prometheus.py) and check
the names they use exist (tests/unit/test_dashboards.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

HERE = Path(__file__).parent
DASHBOARD = HERE / "ebpfguard-overview.json"
RULES = HERE / "prometheus" / "ebpfguard.rules.yml"
RULES_TEST = HERE / "prometheus" / "ebpfguard.rules_test.yml"

# What Grafana puts in place of its variables, for a query sent to Prometheus directly.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$sandbox": ".*",
}
LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,]+),\s*\w+\)$")


def dashboard_queries(dashboard: dict) -> list[str]:
    """The panels' target expressions and the variables' queries, as Grafana would send them."""
    found = [target["expr"] for panel in dashboard.get("panels", []) for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            # label_values(METRIC, LABEL) asks for METRIC's series: the selector is the PromQL.
            found.append(LABEL_VALUES.match(variable["query"]).group("metric"))
    return [as_promql(q) for q in found]


def as_promql(query: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    return query


def rule_expressions(rules: dict) -> dict[str, str]:
    """{record or alert name: expr} of every rule."""
    return {rule.get("record") or rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def load_rules() -> dict:
    return yaml.safe_load(RULES.read_text())
