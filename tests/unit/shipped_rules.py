"""Rule contexts built from the rule files shipped in the package, as the engine builds them.

Detector tests use the shipped params and lists, so a test also checks that the YAML and the
detector agree on names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from ebpfguard.detect.registry import ReadProcessFile, RuleContext

RULES_DIR = Path(__file__).resolve().parents[2] / "ebpfguard" / "rules"


def _load(rule_id: str) -> dict:
    """The shipped file that defines a rule (`miner.stratum` lives in miner_stratum.yaml)."""
    for path in sorted(RULES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if any(rule["id"] == rule_id for rule in data.get("rules") or ()):
            return data
    raise KeyError(rule_id)


def context_for(rule_id: str, read_file: Optional[ReadProcessFile] = None,
                **params: Any) -> RuleContext:
    """The RuleContext of a shipped rule, `@list` references resolved, params overridable."""
    data = _load(rule_id)
    lists = {name: tuple(items) for name, items in (data.get("lists") or {}).items()}
    rule = next(r for r in data["rules"] if r["id"] == rule_id)
    resolved = {key: lists[value[1:]] if isinstance(value, str) and value.startswith("@")
                else value for key, value in (rule.get("params") or {}).items()}
    resolved.update(params)
    return RuleContext(rule_id=rule_id, params=resolved, lists=lists, read_file=read_file)
