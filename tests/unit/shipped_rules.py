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


def _load(family: str) -> dict:
    return yaml.safe_load((RULES_DIR / f"{family}.yaml").read_text())


def context_for(rule_id: str, read_file: Optional[ReadProcessFile] = None,
                **params: Any) -> RuleContext:
    """The RuleContext of a shipped rule, `@list` references resolved, params overridable."""
    data = _load(rule_id.split(".", 1)[0])
    lists = {name: tuple(items) for name, items in (data.get("lists") or {}).items()}
    rule = next(r for r in data["rules"] if r["id"] == rule_id)
    resolved = {key: lists[value[1:]] if isinstance(value, str) and value.startswith("@")
                else value for key, value in (rule.get("params") or {}).items()}
    resolved.update(params)
    return RuleContext(rule_id=rule_id, params=resolved, lists=lists, read_file=read_file)
