"""Allow conditions: which events a rule (or the agent config) leaves alone.

A condition is a mapping of fields to glob lists, shared by rules files (`conditions:` and a
rule's `allow:`) and the agent config (`detect.allow`). Every field given must match; a field
matches when any of its globs does. Globs are compiled once, so matching costs one linear-time glob set per
field, and only for events that already produced a finding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from ebpfguard.detect.registry import Event
from ebpfguard.globs import GlobSet

# field -> what it is matched against
CONDITION_FIELDS = {
    "sandboxes": "sandbox.name",
    "comm": "process.comm",
    "exe": "process.exe",
    "ancestors": "the comm or exe of any process in process.ancestry",
}


def compile_globs(globs: Iterable[str]) -> GlobSet:
    """A matcher for a whole string that any of the shell globs matches (and, for an empty
    list, matches nothing: an empty allowlist must not allow everything). Linear time: the
    strings matched (comm, exe, sandbox names) are the sandbox's choice."""
    return GlobSet(globs)


@dataclass(frozen=True)
class Condition:
    """A compiled allow condition; fields left out match everything."""

    sandboxes: Optional[GlobSet] = None
    comm: Optional[GlobSet] = None
    exe: Optional[GlobSet] = None
    ancestors: Optional[GlobSet] = None

    def matches(self, event: Event) -> bool:
        """Whether every field of this condition matches the event."""
        process = event.get("process") or {}
        if self.sandboxes and not _matches(self.sandboxes, (event.get("sandbox") or {}).get("name")):
            return False
        if self.comm and not _matches(self.comm, process.get("comm")):
            return False
        if self.exe and not _matches(self.exe, process.get("exe")):
            return False
        if self.ancestors:
            names = (
                value
                for parent in process.get("ancestry") or ()
                if isinstance(parent, Mapping)
                for value in (parent.get("comm"), parent.get("exe"))
            )
            if not any(_matches(self.ancestors, name) for name in names):
                return False
        return True


def _matches(globs: GlobSet, value: Any) -> bool:
    return isinstance(value, str) and globs.match(value)


def parse_condition(spec: Any, lists: Mapping[str, tuple]) -> Condition:
    """Build a Condition from `{field: glob | [glob, "@list", ...]}`; ValueError says what is wrong."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError("a condition is a non-empty mapping of " + ", ".join(CONDITION_FIELDS))
    compiled = {}
    for name, value in spec.items():
        if name not in CONDITION_FIELDS:
            raise ValueError(f"unknown condition field {name!r} (known: {', '.join(CONDITION_FIELDS)})")
        compiled[name] = compile_globs(expand_strings(value, lists, what=f"condition field {name!r}"))
    return Condition(**compiled)


def expand_strings(value: Any, lists: Mapping[str, tuple], *, what: str) -> list[str]:
    """A string or list of strings, with each `"@name"` replaced by the items of that list."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"{what} must be a string or a list of strings")
    expanded: list[str] = []
    for item in items:
        if item.startswith("@"):
            if item[1:] not in lists:
                raise ValueError(f"{what} refers to unknown list {item!r}")
            expanded.extend(str(listed) for listed in lists[item[1:]])
        else:
            expanded.append(item)
    return expanded
