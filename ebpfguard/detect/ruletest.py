"""`ebpfguard rules test`: run a rules file's own `examples` through the engine.

Each example gets a fresh engine over every loaded rule (so allowlists, exceptions and the
other rules apply as in replay, and no example's state or de-duplication leaks into the
next), and the event is completed with replay's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ebpfguard.detect.engine import DetectionEngine
from ebpfguard.detect.replay import LineError, parse_line, with_defaults
from ebpfguard.detect.rulefile import RuleSet


@dataclass(frozen=True)
class ExampleResult:
    """The outcome of one example: `got` is alert, none, or `error: why`."""

    rule: str
    origin: str
    expect: str
    got: str

    @property
    def passed(self) -> bool:
        return self.got == self.expect


def run_examples(rules: RuleSet, path: Path, config: Optional[Mapping[str, Any]] = None) -> list[ExampleResult]:
    """The result of every example written in `path`, in rule order."""
    results = []
    prefix = f"{path}:"
    for rule in rules.rules:
        for example in rule.examples:
            if not example.origin.startswith(prefix):
                continue
            try:
                event = parse_line(json.dumps(example.event).encode())
            except LineError as problem:
                results.append(ExampleResult(rule.id, example.origin, example.expect, f"error: {problem}"))
                continue
            engine = DetectionEngine(rules, config)
            alerts = engine.process(with_defaults(event)) if rule.enabled else []
            got = "alert" if any(alert["rule"] == rule.id for alert in alerts) else "none"
            results.append(ExampleResult(rule.id, example.origin, example.expect, got))
    return results


def format_results(results: list[ExampleResult]) -> str:
    """A pass/fail table, one example a line, and a count."""
    header = ("RULE", "EXAMPLE", "EXPECT", "GOT", "RESULT")
    rows = [(r.rule, r.origin, r.expect, r.got, "pass" if r.passed else "FAIL") for r in results]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    failed = sum(1 for r in results if not r.passed)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)
