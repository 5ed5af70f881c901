"""Rules files: YAML `lists`, `macros`, `conditions` and `rules`, checked with line-precise errors.

The shipped files (`ebpfguard/rules/*.yaml`, sorted by name) define the shipped rules; user
files, loaded after them, extend lists (`lists: {name: [...]}` appends), replace or add macros
and allow conditions, and override the fields they give of an existing rule (`params` key by
key, `exceptions` appended). A new rule either names a registered detector by its id or gives
a `condition` (docs/rules.md). Every problem is reported as `FILE:LINE: what`, or
`FILE:LINE:COLUMN: what` inside a condition or output template.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import yaml

from ebpfguard.detect.compiler import Compiler
from ebpfguard.detect.conditions import Condition, expand_strings, parse_condition
from ebpfguard.detect.registry import DETECTORS, RuleContext
from ebpfguard.detect.userrules import ConditionRule, Example, build_condition_rule, build_examples, source_position
from ebpfguard.yamlinput import YamlLimitError, check_yaml_limits

SEVERITIES = ("info", "low", "medium", "high", "critical")
TOP_LEVEL_KEYS = ("lists", "macros", "conditions", "rules")
# A rule's fields; a new rule must give all of REQUIRED_FIELDS, an override only `id`.
RULE_FIELDS = ("id", "description", "severity", "tags", "enabled", "evidence", "params", "allow",
               "condition", "exceptions", "output", "examples")
REQUIRED_FIELDS = ("id", "description", "severity", "tags", "evidence")
REQUIRED_CONDITION_FIELDS = ("id", "description", "severity", "condition")
CONDITION_ONLY_FIELDS = ("condition", "exceptions", "output")


class RulesError(Exception):
    """Rules files that cannot be used; `problems` are `FILE:LINE: message` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Rule:
    """One rule after all files are merged: `params` has its `@list` references expanded."""

    id: str
    description: str
    severity: str
    tags: tuple[str, ...]
    enabled: bool
    evidence: tuple[str, ...]
    params: Mapping[str, Any]
    allow: tuple[Condition, ...]
    origin: str  # FILE:LINE of the definition
    condition: Optional[ConditionRule] = None  # None: a registered detector's rule
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    """Rules in load order and the merged lists they refer to."""

    rules: tuple[Rule, ...]
    lists: Mapping[str, tuple] = field(default_factory=dict)

    def get(self, rule_id: str) -> Optional[Rule]:
        """The rule with this id, or None."""
        return next((rule for rule in self.rules if rule.id == rule_id), None)


def shipped_rule_files() -> list[Path]:
    """The rules files shipped in the package, in the order they load."""
    directory = importlib.resources.files("ebpfguard").joinpath("rules")
    return sorted(
        (Path(str(entry)) for entry in directory.iterdir() if entry.name.endswith(".yaml")),
        key=lambda path: path.name,
    )


def load_rules(extra_files: Sequence[Path] = (), host_lists: Optional[Mapping[str, Sequence]] = None) -> RuleSet:
    """Load the shipped rules, then each user file in order; RulesError lists every problem.

    `host_lists` extends lists with what the live agent found on this host (its own
    addresses, say) before rules refer to them; replay passes none."""
    merger = _Merger()
    for path in shipped_rule_files():
        merger.add_file(path, shipped=True)
    for path in extra_files:
        merger.add_file(Path(path), shipped=False)
    for name, items in (host_lists or {}).items():
        merged = merger.lists.setdefault(name, [])
        for item in items:
            merger.extend_list(name, merged, item)  # as user files extend lists: each item once
    return merger.finish()


# -- YAML with line numbers -------------------------------------------------------------------


class _Mapping(dict):
    """A YAML mapping that remembers its line and the line of each key."""

    line: int
    key_lines: dict
    value_spans: dict  # key -> (start mark, end mark, style) of a scalar value


class _Sequence(list):
    """A YAML sequence that remembers its line and the line of each item."""

    line: int
    item_lines: list


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line, mapping.key_lines, mapping.value_spans = node.start_mark.line + 1, {}, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(None, None, "a key must be a scalar", key_node.start_mark)
        if key in mapping:
            # PyYAML keeps the last duplicate silently; a rule edited twice is a mistake.
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.ScalarNode):
            mapping.value_spans[key] = (value_node.start_mark, value_node.end_mark, value_node.style)
    return mapping


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> _Sequence:
    sequence = _Sequence(loader.construct_object(item, deep=True) for item in node.value)
    sequence.line = node.start_mark.line + 1
    sequence.item_lines = [item.start_mark.line + 1 for item in node.value]
    return sequence


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def _line_of(node: Any, default: int) -> int:
    return getattr(node, "line", default)


# -- merging files ----------------------------------------------------------------------------


@dataclass
class _RuleDraft:
    fields: dict
    lines: dict  # field -> "FILE:LINE"
    origin: str
    shipped: bool
    spans: dict  # field -> (start mark, end mark, style) of a scalar value


class _Merger:
    """Accumulates files, then checks and resolves everything in `finish`."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.lists: dict[str, list] = {}
        self._seen: dict[str, set] = {}
        self.conditions: dict[str, tuple[Any, str]] = {}
        self.macros: dict[str, tuple[Any, str, Any]] = {}  # name -> (text, FILE:LINE, span)
        self.rules: dict[str, _RuleDraft] = {}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def add_file(self, path: Path, *, shipped: bool) -> None:
        try:
            text = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as err:
            self.problem(f"{path}:0", f"cannot read rules file: {err}")
            return
        try:
            check_yaml_limits(text)
            document = yaml.load(text, Loader=_LineLoader)  # noqa: S506 (a SafeLoader subclass)
        except YamlLimitError as err:
            self.problem(f"{path}:{err.line}", err.message)
            return
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
            line = mark.line + 1 if mark else 0
            what = getattr(err, "problem", None) or str(err)
            self.problem(f"{path}:{line}", f"not valid YAML: {what}")
            return
        if document is None:
            return
        if not isinstance(document, _Mapping):
            self.problem(f"{path}:{_line_of(document, 1)}", "a rules file is a mapping of " + ", ".join(TOP_LEVEL_KEYS))
            return
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                where = f"{path}:{document.key_lines[key]}"
                self.problem(where, f"unknown top-level key {key!r} (known: {', '.join(TOP_LEVEL_KEYS)})")
        self._add_lists(path, document.get("lists"), document.key_lines.get("lists", 1))
        self._add_macros(path, document.get("macros"), document.key_lines.get("macros", 1))
        self._add_conditions(path, document.get("conditions"), document.key_lines.get("conditions", 1))
        self._add_rules(path, document.get("rules"), document.key_lines.get("rules", 1), shipped)

    def _add_lists(self, path: Path, lists: Any, line: int) -> None:
        if lists is None:
            return
        if not isinstance(lists, _Mapping):
            self.problem(f"{path}:{line}", "`lists` must be a mapping of name to list")
            return
        for name, items in lists.items():
            where = f"{path}:{lists.key_lines[name]}"
            if not isinstance(name, str) or not isinstance(items, list):
                self.problem(where, f"list {name!r} must be a list of strings or numbers")
                continue
            merged = self.lists.setdefault(name, [])
            for item, item_line in zip(items, items.item_lines):
                if not isinstance(item, (str, int, float)) or isinstance(item, bool):
                    self.problem(f"{path}:{item_line}", f"list {name!r}: items must be strings or numbers")
                else:
                    self.extend_list(name, merged, item)

    def extend_list(self, name: str, merged: list, item: Any) -> None:
        """Add an item once (a set beside each list: linear in the items, not quadratic)."""
        seen = self._seen.setdefault(name, set())
        if item not in seen:
            seen.add(item)
            merged.append(item)

    def _add_macros(self, path: Path, macros: Any, line: int) -> None:
        if macros is None:
            return
        if not isinstance(macros, _Mapping):
            self.problem(f"{path}:{line}", "`macros` must be a mapping of name to condition")
            return
        for name, text in macros.items():
            self.macros[name] = (text, f"{path}:{macros.key_lines[name]}", macros.value_spans.get(name))

    def _add_conditions(self, path: Path, conditions: Any, line: int) -> None:
        if conditions is None:
            return
        if not isinstance(conditions, _Mapping):
            self.problem(f"{path}:{line}", "`conditions` must be a mapping of name to condition")
            return
        for name, spec in conditions.items():
            self.conditions[name] = (spec, f"{path}:{conditions.key_lines[name]}")

    def _add_rules(self, path: Path, rules: Any, line: int, shipped: bool) -> None:
        if rules is None:
            return
        if not isinstance(rules, list):
            self.problem(f"{path}:{line}", "`rules` must be a list of rules")
            return
        seen_here: set[str] = set()
        for entry, entry_line in zip(rules, rules.item_lines):
            where = f"{path}:{entry_line}"
            if not isinstance(entry, _Mapping):
                self.problem(where, "a rule is a mapping with an `id`")
                continue
            unknown = [key for key in entry if key not in RULE_FIELDS]
            for key in unknown:
                self.problem(f"{path}:{entry.key_lines[key]}", f"unknown rule field {key!r} (known: {', '.join(RULE_FIELDS)})")
            rule_id = entry.get("id")
            if not isinstance(rule_id, str) or not rule_id:
                self.problem(where, "a rule needs an `id` string")
                continue
            if rule_id in seen_here:
                self.problem(where, f"rule {rule_id!r} appears twice in this file")
                continue
            seen_here.add(rule_id)
            lines = {key: f"{path}:{entry.key_lines[key]}" for key in entry if key not in unknown}
            fields = {key: value for key, value in entry.items() if key not in unknown}
            spans = {key: span for key, span in entry.value_spans.items() if key not in unknown}
            for exception in fields.get("exceptions") or []:
                if isinstance(exception, _Mapping):
                    exception.where = f"{path}:{exception.line}"
            existing = self.rules.get(rule_id)
            if existing is None:
                self.rules[rule_id] = _RuleDraft(fields, lines, where, shipped, spans)
            elif shipped:
                self.problem(where, f"rule {rule_id!r} is already defined at {existing.origin}")
            else:
                _override(existing, fields, lines, spans)

    def finish(self) -> RuleSet:
        lists = {name: tuple(items) for name, items in self.lists.items()}
        conditions = {}
        for name, (spec, where) in self.conditions.items():
            try:
                conditions[name] = parse_condition(spec, lists)
            except ValueError as err:
                self.problem(where, f"condition {name!r}: {err}")
        compiler = self._macro_compiler(lists)
        rules = []
        for rule_id, draft in self.rules.items():
            rule = self._finish_rule(rule_id, draft, lists, conditions, compiler)
            if rule is not None:
                rules.append(rule)
        if self.problems:
            raise RulesError(self.problems)
        return RuleSet(rules=tuple(rules), lists=lists)

    def _macro_compiler(self, lists: Mapping[str, tuple]) -> Compiler:
        """A compiler for rule conditions; each macro's own problems are reported at the macro."""
        texts = {name: text for name, (text, _where, _span) in self.macros.items() if isinstance(text, str)}
        compiler = Compiler(lists, texts)
        for name, (text, where, span) in self.macros.items():
            if not isinstance(text, str):
                self.problem(where, f"macro {name!r} must be a condition string")
                continue
            for error in compiler.macro_problems(name):
                self.problem(_at(where, span, error.offset), f"macro {name!r}: {error.message}")
        return compiler

    def _finish_rule(self, rule_id: str, draft: _RuleDraft, lists: Mapping[str, tuple], conditions: Mapping[str, Condition],
                     compiler: Compiler) -> Optional[Rule]:
        before = len(self.problems)
        fields, lines = draft.fields, draft.lines

        def problem(key: str, message: str) -> None:
            self.problem(lines.get(key, draft.origin), f"rule {rule_id!r}: {message}")

        def located(key: str, message: str, offset: Optional[int]) -> None:
            self.problem(_at(lines.get(key, draft.origin), draft.spans.get(key), offset), f"rule {rule_id!r}: {message}")

        examples = build_examples(fields.get("examples"), lines.get("examples", draft.origin), located)
        if "condition" in fields:
            return self._finish_condition_rule(rule_id, draft, conditions, lists, compiler, examples, problem, located, before)
        for key in CONDITION_ONLY_FIELDS:
            if key in fields:
                problem(key, f"`{key}` belongs to condition rules (with a `condition`), not to detector rules")
        if rule_id not in DETECTORS:
            problem("id", f"no detector is registered for this id (registered: {', '.join(sorted(DETECTORS))})")
        for key in REQUIRED_FIELDS:
            if key not in fields:
                problem("id", f"a new rule needs `{key}`")
        if not isinstance(fields.get("description", ""), str):
            problem("description", "`description` must be a string")
        if fields.get("severity", "info") not in SEVERITIES:
            problem("severity", f"`severity` must be one of {', '.join(SEVERITIES)}")
        for key in ("tags", "evidence"):
            if not _is_string_list(fields.get(key, [])):
                problem(key, f"`{key}` must be a list of strings")
        if not isinstance(fields.get("enabled", True), bool):
            problem("enabled", "`enabled` must be true or false")
        params = fields.get("params", {})
        if not isinstance(params, Mapping):
            problem("params", "`params` must be a mapping")
            params = {}
        try:
            params = {name: _resolve_param(value, lists) for name, value in params.items()}
        except ValueError as err:
            problem("params", str(err))
        allow = self._allow_conditions(fields.get("allow"), lists, conditions, lambda message: problem("allow", message))
        if len(self.problems) > before:
            return None
        try:
            # Detectors check their params when built; doing it here makes lint catch them.
            DETECTORS[rule_id](RuleContext(rule_id=rule_id, params=params, lists=lists))
        except (ValueError, TypeError, KeyError) as err:
            problem("params", f"invalid params: {err}")
            return None
        return Rule(
            id=rule_id,
            description=fields["description"],
            severity=fields["severity"],
            tags=tuple(fields["tags"]),
            enabled=fields.get("enabled", True),
            evidence=tuple(fields["evidence"]),
            params=params,
            allow=allow,
            origin=draft.origin,
            examples=examples,
        )

    def _finish_condition_rule(self, rule_id: str, draft: _RuleDraft, conditions: Mapping[str, Condition],
                               lists: Mapping[str, tuple], compiler: Compiler, examples: tuple[Example, ...],
                               problem, located, before: int) -> Optional[Rule]:
        fields = draft.fields
        if rule_id in DETECTORS:
            problem("condition", "this id is a detector's rule: give the condition rule an id of its own")
        for key in REQUIRED_CONDITION_FIELDS:
            if key not in fields:
                problem("id", f"a new rule needs `{key}`")
        if "params" in fields:
            problem("params", "`params` belongs to detector rules; a condition rule uses lists and macros")
        if not isinstance(fields.get("description", ""), str):
            problem("description", "`description` must be a string")
        if fields.get("severity", "info") not in SEVERITIES:
            problem("severity", f"`severity` must be one of {', '.join(SEVERITIES)}")
        if not _is_string_list(fields.get("tags", [])):
            problem("tags", "`tags` must be a list of strings")
        if not isinstance(fields.get("enabled", True), bool):
            problem("enabled", "`enabled` must be true or false")
        allow = self._allow_conditions(fields.get("allow"), lists, conditions, lambda message: problem("allow", message))
        compiled = build_condition_rule(fields, compiler, located)
        if compiled is None or len(self.problems) > before:
            return None
        return Rule(
            id=rule_id,
            description=fields["description"],
            severity=fields["severity"],
            tags=tuple(fields.get("tags", ())),
            enabled=fields.get("enabled", True),
            evidence=compiled.evidence,
            params={},
            allow=allow,
            origin=draft.origin,
            condition=compiled,
            examples=examples,
        )

    @staticmethod
    def _allow_conditions(spec: Any, lists: Mapping[str, tuple], conditions: Mapping[str, Condition], problem) -> tuple[Condition, ...]:
        """`allow`: a condition, a condition's name, or a list of either."""
        if spec is None:
            return ()
        allowed = []
        for item in spec if isinstance(spec, list) else [spec]:
            if isinstance(item, str):
                if item not in conditions:
                    problem(f"`allow` names unknown condition {item!r}")
                    continue
                allowed.append(conditions[item])
                continue
            try:
                allowed.append(parse_condition(item, lists))
            except ValueError as err:
                problem(f"`allow`: {err}")
        return tuple(allowed)


def _override(draft: _RuleDraft, fields: dict, lines: dict, spans: dict) -> None:
    """A user file's entry for an existing rule: given fields replace, `params` merge by key,
    `exceptions` are appended."""
    for key, value in fields.items():
        if key == "params" and isinstance(value, Mapping) and isinstance(draft.fields.get("params"), Mapping):
            draft.fields["params"] = {**draft.fields["params"], **value}
        elif key == "exceptions" and isinstance(value, list) and isinstance(draft.fields.get(key), list):
            draft.fields[key] = [*draft.fields[key], *value]
        else:
            draft.fields[key] = value
        draft.lines[key] = lines[key]
        draft.spans.pop(key, None)
        if key in spans:
            draft.spans[key] = spans[key]


def _at(where: str, span: Any, offset: Optional[int]) -> str:
    """FILE:LINE:COLUMN of an offset in a scalar's value, or FILE:LINE when it is not known."""
    position = source_position(span, offset) if offset is not None else None
    if position is None:
        return where
    return f"{where.rsplit(':', 1)[0]}:{position[0]}:{position[1]}"


def _resolve_param(value: Any, lists: Mapping[str, tuple]) -> Any:
    """Expand `"@name"` (alone or as list items) into the named list's items, as a tuple."""
    if isinstance(value, str) and value.startswith("@"):
        return tuple(expand_strings(value, lists, what="params"))
    if isinstance(value, list) and any(isinstance(item, str) and item.startswith("@") for item in value):
        return tuple(expand_strings(value, lists, what="params"))
    if isinstance(value, Mapping):
        return {key: _resolve_param(item, lists) for key, item in value.items()}
    return value


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
