"""Which condition rules an event needs evaluated: by its kind, then by a field value.

Rules are grouped by the event kinds their conditions can match (a condition naming no kind
is in every group). Within a group, a rule whose condition requires `field = value` (or
`field in (...)`) on a plain field is filed under those values: the event's value picks them
out with one dict lookup per such field, so a thousand rules on a thousand process names
cost about what one does. The rest are evaluated for every event of the kind. The index only
narrows: every candidate still runs its full (residual) condition.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ebpfguard.detect.compiler import canonical_address
from ebpfguard.detect.fields import FIELDS_BY_NAME, GETTERS
from ebpfguard.detect.registry import Event


class KindGroup:
    """The rules for one kind: always evaluated ones and ones keyed by a field's value."""

    def __init__(self, rules: Sequence[tuple[int, Any]]) -> None:
        self.always: list[tuple[int, Any]] = []
        tables: dict[tuple[str, str], dict[Any, list[tuple[int, Any]]]] = {}
        for order, rule in rules:
            key = rule.condition.compiled.key
            if key is None:
                self.always.append((order, rule))
                continue
            table = tables.setdefault((key.mode, key.field), {})
            for value in key.values:
                table.setdefault(value, []).append((order, rule))
        self.keyed = tuple(_Lookup(mode, field, table) for (mode, field), table in tables.items())
        self.rules = tuple(rule for _, rule in self.always)

    def candidates(self, event: Event) -> Sequence[Any]:
        """The rules that may match this event, in load order."""
        if not self.keyed:
            return self.rules
        found: list[tuple[int, Any]] = []
        for lookup in self.keyed:
            lookup.collect(event, found)
        if not found:
            return self.rules
        unique = dict(self.always + found)  # by load order: one entry per rule
        return [unique[order] for order in sorted(unique)]


class _Lookup:
    """Rules filed by one field's value: whole (eq), or a prefix or suffix of it. A prefix
    table is probed once per distinct prefix length, so its cost does not grow with rules."""

    def __init__(self, mode: str, field: str, table: dict[Any, list[tuple[int, Any]]]) -> None:
        self.mode = mode
        self.getter = GETTERS[field]
        self.is_list = FIELDS_BY_NAME[field].type.startswith("list[")
        self.normalize = canonical_address if FIELDS_BY_NAME[field].element_type == "ip" and mode == "eq" else None
        self.table = table
        self.lengths = sorted({len(value) for value in table}) if mode != "eq" else []

    def collect(self, event: Event, found: list[tuple[int, Any]]) -> None:
        value = self.getter(event, None)
        items = (value if isinstance(value, list) else ()) if self.is_list else (value,)
        for item in items:
            if self.mode == "eq":
                if self.normalize is not None:
                    item = self.normalize(item)
                try:
                    found.extend(self.table.get(item, ()))
                except TypeError:  # an unhashable value (hostile input) equals no literal
                    continue
            elif isinstance(item, str):
                for length in self.lengths:
                    if length > len(item):
                        break
                    part = item[:length] if self.mode == "prefix" else item[len(item) - length:]
                    found.extend(self.table.get(part, ()))


class RuleIndex:
    """Condition rules by event kind; `for_event` gives the ones to evaluate."""

    def __init__(self, rules: Sequence[Any]) -> None:
        by_kind: dict[Optional[str], list[tuple[int, Any]]] = {}
        for order, rule in enumerate(rules):
            for kind in rule.condition.kinds or (None,):
                by_kind.setdefault(kind, []).append((order, rule))
        any_kind = by_kind.pop(None, [])
        self._groups = {kind: KindGroup(sorted(listed + any_kind, key=lambda entry: entry[0]))
                        for kind, listed in by_kind.items()}
        self._other = KindGroup(any_kind)
        self._any_kind = bool(any_kind)
        self.empty = not rules

    def for_event(self, event: Event) -> Sequence[Any]:
        """Candidate rules for the event, in load order."""
        kind = event.get("kind")
        group = self._groups.get(kind, self._other) if isinstance(kind, str) else self._other
        return group.candidates(event)

    def may_match(self, kind: str) -> bool:
        """Whether any rule can match an event of this kind."""
        return self._any_kind or kind in self._groups

    def kind_known(self, kind: Any) -> bool:
        """Whether rules were indexed under this exact kind (their residual test applies)."""
        return isinstance(kind, str) and kind in self._groups
