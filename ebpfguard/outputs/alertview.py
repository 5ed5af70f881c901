"""An alert's fields as the outputs write them: severity order, command line, evidence text.

Everything here reaches people through other tools (Slack, a pager, a syslog viewer), so every
string a sandbox controls comes out with control and invisible characters escaped, and bounded
in length.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ebpfguard.detect.rulefile import SEVERITIES
from ebpfguard.watch.format import argv_text, safe

SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
MAX_TEXT = 2048


def at_least(severity: Any, minimum: str) -> bool:
    """Whether an alert's severity is `minimum` or above (unknown severities pass)."""
    return SEVERITY_RANK.get(severity, len(SEVERITIES)) >= SEVERITY_RANK[minimum]


def wants(event: dict, minimum: str) -> bool:
    """An alert at or above the output's minimum severity."""
    return event.get("kind") == "alert" and at_least(event.get("severity"), minimum)


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters, marked when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text(value: Any, limit: int = MAX_TEXT) -> str:
    """Any field as escaped, bounded text."""
    return bounded(safe(value), limit)


def process(alert: dict) -> dict:
    return alert.get("process") or {}


def sandbox(alert: dict) -> dict:
    return alert.get("sandbox") or {}


def command_line(alert: dict, limit: int = MAX_TEXT) -> str:
    """The alert's process command line as a shell would read it, escaped and bounded."""
    argv = process(alert).get("argv") or []
    return bounded(argv_text([str(a) for a in argv]), limit)


def scalar(value: Any) -> Any:
    """A JSON scalar as is; a list or object as compact JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def evidence_text(alert: dict, limit: int = MAX_TEXT) -> str:
    """`key=value` pairs of the evidence, sorted, escaped and bounded."""
    evidence = alert.get("evidence") or {}
    if not isinstance(evidence, dict):
        return text(scalar(evidence), limit)
    return bounded("; ".join(f"{safe(k)}={safe(scalar(v))}" for k, v in sorted(evidence.items())), limit)


def optional(value: Any) -> Optional[str]:
    """A known, non-empty value as text; None otherwise."""
    return None if value is None or value == "" else text(value, 256)
