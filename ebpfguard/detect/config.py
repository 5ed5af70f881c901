"""The agent config's `detect:` section: defaults and checks."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Pattern

import yaml

from ebpfguard.detect.conditions import Condition, compile_globs, parse_condition


class DetectConfigError(ValueError):
    """The `detect:` section cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class AllowEntry:
    """A config allowlist entry: findings of matching rules for matching events are dropped."""

    rules: Pattern[str]
    condition: Condition


@dataclass(frozen=True)
class DetectConfig:
    dedup_window_ns: int
    dedup_max_keys: int
    allow: tuple[AllowEntry, ...]


def default_detect_section() -> dict:
    """The `detect:` section of the embedded default config."""
    text = importlib.resources.files("ebpfguard").joinpath("default_config.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["detect"]


def parse_detect_config(section: Optional[Mapping[str, Any]] = None) -> DetectConfig:
    """Check a `detect:` section (overlaid on the default) and compile it."""
    merged = {**default_detect_section(), **(section or {})}
    unknown = sorted(set(merged) - set(default_detect_section()))
    if unknown:
        raise DetectConfigError(f"detect: unknown key(s) {', '.join(unknown)}")
    window = merged["dedup_window_s"]
    if isinstance(window, bool) or not isinstance(window, (int, float)) or window < 0:
        raise DetectConfigError("detect.dedup_window_s must be a number of seconds >= 0")
    max_keys = merged["dedup_max_keys"]
    if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
        raise DetectConfigError("detect.dedup_max_keys must be an integer >= 1")
    if not isinstance(merged["allow"], list):
        raise DetectConfigError("detect.allow must be a list of entries")
    allow = tuple(_allow_entry(index, entry) for index, entry in enumerate(merged["allow"]))
    return DetectConfig(dedup_window_ns=int(window * 1e9), dedup_max_keys=max_keys, allow=allow)


def _allow_entry(index: int, entry: Any) -> AllowEntry:
    if not isinstance(entry, Mapping):
        raise DetectConfigError(f"detect.allow[{index}] must be a mapping")
    rules = entry.get("rules", ["*"])
    if isinstance(rules, str):
        rules = [rules]
    if not isinstance(rules, list) or not all(isinstance(rule, str) for rule in rules):
        raise DetectConfigError(f"detect.allow[{index}].rules must be a list of rule-id globs")
    condition_spec = {key: value for key, value in entry.items() if key != "rules"}
    try:
        condition = parse_condition(condition_spec, lists={}) if condition_spec else Condition()
    except ValueError as err:
        raise DetectConfigError(f"detect.allow[{index}]: {err}") from None
    return AllowEntry(rules=compile_globs(rules), condition=condition)
