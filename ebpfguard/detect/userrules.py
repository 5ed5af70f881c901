"""Rules written as conditions (`condition:`), with Falco-style `exceptions`, an `output`
template and `examples`, checked into what the engine runs.

A condition rule needs no Python: the engine evaluates its compiled condition for events of
the kinds it can match, and an event it matches becomes a finding whose summary is the
rendered `output` (else the description) and whose evidence is the `evidence` fields' values
(by default every field the condition and output read, but `kind`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from ebpfguard.detect.compiler import Compiled, Compiler, Errors, Template, compile_template
from ebpfguard.detect.fields import FIELDS_BY_NAME, EventView
from ebpfguard.detect.language import COMPARISONS, ConditionError
from ebpfguard.detect.registry import Finding

EXPECTATIONS = ("alert", "none")
MAX_EVIDENCE_ITEMS = 64

# (message, offset in the key's text or None) -> reported at the key's position
Problem = Callable[[str, str, Optional[int]], None]


@dataclass(frozen=True)
class ConditionRule:
    """What the engine runs for a condition rule."""

    compiled: Compiled
    output: Optional[Template]
    evidence: tuple[str, ...]

    @property
    def kinds(self) -> Optional[frozenset]:
        return self.compiled.kinds

    def finding(self, view: EventView, description: str) -> Finding:
        summary = self.output.render(view) if self.output is not None else " ".join(description.split())
        evidence = {}
        for name in self.evidence:
            value = view.value(name)
            evidence[name] = value[:MAX_EVIDENCE_ITEMS] if isinstance(value, list) else value
        return Finding(summary=summary, evidence=evidence)


@dataclass(frozen=True)
class Example:
    """One of a rule's `examples`: an event and whether the rule must alert on it."""

    event: Mapping[str, Any]
    expect: str
    origin: str  # FILE:LINE


def build_condition_rule(fields: Mapping[str, Any], compiler: Compiler, problem: Problem) -> Optional[ConditionRule]:
    """Compile a rule's condition, exceptions, output and evidence; report problems by key."""
    condition = fields.get("condition")
    if not isinstance(condition, str) or not condition.strip():
        problem("condition", "`condition` must be a non-empty string", None)
        return None
    compiled: Optional[Compiled] = None
    try:
        compiled = compiler.compile(condition)
    except Errors as found:
        for error in found.errors:
            problem("condition", error.message, error.offset)
    # Exceptions and output are checked even after a bad condition: lint reports everything.
    exceptions = _exceptions(fields.get("exceptions"), compiler, problem)
    output = None
    if "output" in fields:
        if not isinstance(fields["output"], str):
            problem("output", "`output` must be a string", None)
            return None
        try:
            output = compile_template(fields["output"])
        except ConditionError as error:
            problem("output", error.message, error.offset)
            return None
    if compiled is None or exceptions is None:
        return None
    if exceptions:
        compiled = compiled.excepting(tuple(exceptions))
    evidence = fields.get("evidence")
    if evidence is None:
        used = compiled.fields + (output.fields if output else ())
        evidence = [name for name in dict.fromkeys(used) if name != "kind"]
    elif not isinstance(evidence, list) or not all(isinstance(name, str) for name in evidence):
        problem("evidence", "`evidence` must be a list of field names", None)
        return None
    unknown = [name for name in evidence if name not in FIELDS_BY_NAME]
    if unknown:
        problem("evidence", f"unknown field(s) in `evidence`: {', '.join(unknown)}", None)
        return None
    return ConditionRule(compiled=compiled, output=output, evidence=tuple(evidence))


def _exceptions(spec: Any, compiler: Compiler, problem: Problem) -> Optional[list]:
    """Falco-style exceptions: each a name, fields, optional comps and value tuples; the rule
    does not fire when every field of any one tuple matches."""
    if spec is None:
        return []
    if not isinstance(spec, list):
        problem("exceptions", "`exceptions` must be a list of {name, fields, comps, values}", None)
        return None
    tests = []
    for entry in spec:
        where = getattr(entry, "where", None)
        def report(message: str) -> None:
            problem("exceptions", f"{message}" + (f" (exception at {where})" if where else ""), None)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            report("an exception is a mapping with a `name`, `fields` and `values`")
            return None
        unknown = sorted(set(entry) - {"name", "fields", "comps", "values"})
        if unknown:
            report(f"exception {entry['name']!r}: unknown key(s) {', '.join(unknown)}")
            return None
        single = isinstance(entry.get("fields"), str)
        names = [entry["fields"]] if single else entry.get("fields")
        comps = entry.get("comps", "=" if single else ["="] * len(names or []))
        comps = [comps] if isinstance(comps, str) else comps
        values = entry.get("values", [])
        if (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)
                or not isinstance(comps, list) or len(comps) != len(names) or not isinstance(values, list)):
            report(f"exception {entry['name']!r}: `fields` (a field or a list), `comps` (as many) and "
                   "`values` (a list) are needed")
            return None
        for comp in comps:
            if comp not in COMPARISONS:
                report(f"exception {entry['name']!r}: unknown comparison {comp!r}")
                return None
        for row in values:
            row = [row] if single else row
            if not isinstance(row, list) or len(row) != len(names):
                report(f"exception {entry['name']!r}: each value must have {len(names)} item(s), one per field")
                return None
            try:
                parts = [compiler.comparison(name, comp, value) for name, comp, value in zip(names, comps, row)]
            except Errors as found:
                report(f"exception {entry['name']!r}: " + "; ".join(error.message for error in found.errors))
                return None
            tests.append(_all_of(tuple(part.matches for part in parts)))
    return tests


def _all_of(tests: tuple) -> Callable[[EventView], bool]:
    return lambda view: all(test(view) for test in tests)


def build_examples(spec: Any, where: str, problem: Problem) -> tuple[Example, ...]:
    """A rule's `examples: [{event: {...}, expect: alert|none}]`."""
    if spec is None:
        return ()
    if not isinstance(spec, list):
        problem("examples", "`examples` must be a list of {event, expect}", None)
        return ()
    examples = []
    lines = getattr(spec, "item_lines", [None] * len(spec))
    for entry, line in zip(spec, lines):
        origin = f"{where.rsplit(':', 1)[0]}:{line}" if line else where
        if (not isinstance(entry, Mapping) or set(entry) != {"event", "expect"}
                or entry["expect"] not in EXPECTATIONS or not isinstance(entry["event"], Mapping)
                or not isinstance(entry["event"].get("kind"), str)):
            problem("examples", f"an example is {{event: {{kind: ..., ...}}, expect: alert|none}} ({origin})", None)
            continue
        # Plain data: the loader's mappings carry line numbers the engine has no use for.
        examples.append(Example(event=json.loads(json.dumps(entry["event"])), expect=entry["expect"], origin=origin))
    return tuple(examples)


def source_position(span: Any, offset: Optional[int]) -> Optional[tuple[int, int]]:
    """1-based (line, column) in the YAML file of `offset` in a scalar's value.

    `span` is (start mark, end mark, style) from the loader. Continuation lines of plain,
    quoted and block scalars are followed; escapes inside a double-quoted scalar may shift
    the column by their extra characters."""
    if span is None:
        return None
    start, end, style = span
    buffer = getattr(start, "buffer", None)
    if buffer is None:
        return start.line + 1, start.column + 1
    begin, stop = start.index, end.index
    if style in ('"', "'"):
        begin, stop = begin + 1, stop - 1
    elif style in ("|", ">"):
        newline = buffer.find("\n", begin, stop)
        begin = stop if newline < 0 else newline + 1
    index = begin
    if offset is not None:
        sources = []
        first = True
        position = begin
        for line in buffer[begin:stop].split("\n"):
            skipped = 0 if first and style not in ("|", ">") else len(line) - len(line.lstrip(" \t"))
            column = skipped
            while column < len(line):
                if style == '"' and line[column] == "\\":
                    column += 1  # an escape: the value character is the escaped one
                sources.append(position + min(column, len(line) - 1))
                column += 1
            sources.append(position + len(line))  # the folded space or newline
            position += len(line) + 1
            first = False
        index = sources[min(offset, len(sources) - 1)] if sources else begin
    line = buffer.count("\n", 0, index) + 1
    return line, index - (buffer.rfind("\n", 0, index) + 1) + 1
