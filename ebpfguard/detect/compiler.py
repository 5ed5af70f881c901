"""Conditions, exceptions and output templates: type-checked against the field table and
compiled once into plain Python closures over an `EventView`.

Semantics (docs/rules.md says the same to users):
* A comparison with a field the event does not carry (or carries with another type, as a
  hostile replay line may) is false; `a != b` is `not (a = b)`.
* On a list field a comparison holds when it holds for any item.
* `contains`, `startswith`, `endswith`, `glob`, `pmatch`, `cidr` and `regex` take one value or
  a list (any of them); `in` takes a list.
* `regex` is RE2 (linear time, no backreferences or lookaround): a search, anchor with ^ and $.
  `glob` (`*`, `?`, `[...]`) matches the whole value and is translated to RE2 too. No
  backtracking engine ever sees sandbox-controlled text.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import re2

from ebpfguard.detect.fields import _DERIVED, FIELDS_BY_NAME, GETTERS, EventView, Field
from ebpfguard.detect.language import (
    And, Compare, ConditionError, Exists, ListLiteral, ListRef, Literal, MacroRef, Node, Not, Or, parse,
)

Predicate = Callable[[EventView], bool]
Test = Callable[[Any], bool]

STRING_OPS = frozenset({"=", "!=", "in", "contains", "startswith", "endswith", "glob", "pmatch", "regex"})
OPERATORS = {
    "str": STRING_OPS,
    "ip": STRING_OPS | {"cidr"},
    "int": frozenset({"=", "!=", "<", "<=", ">", ">=", "in"}),
    "float": frozenset({"=", "!=", "<", "<=", ">", ">=", "in"}),
    "bool": frozenset({"=", "!="}),
}
SCALAR_ONLY = frozenset({"=", "!=", "<", "<=", ">", ">="})
MAX_ADDRESS_CHARS = 64
MAX_RENDERED_CHARS = 256
MAX_SUMMARY_CHARS = 2048


def _re2_options() -> "re2.Options":
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20  # bounds the compiled program of one rule's patterns
    return options


RE2_OPTIONS = _re2_options()


@dataclass(frozen=True)
class Compiled:
    """A compiled condition: the test, the event kinds it can hold for (None: any), and the
    fields it reads, in order of first use.

    For the engine's index: `residual` is the test for events already known to be of one of
    `kinds` (the `kind` comparisons dropped), and `key` a (field, values) pair the event's
    field must equal one of for the condition to hold (None when there is none)."""

    matches: Predicate
    kinds: Optional[frozenset]
    fields: tuple[str, ...]
    residual: Optional[Predicate] = None
    key: Optional["Key"] = None

    @property
    def indexed_test(self) -> Predicate:
        return self.residual or self.matches

    def excepting(self, exceptions: Sequence[Predicate]) -> "Compiled":
        """The same condition, false where any exception holds."""
        def apply(test: Predicate) -> Predicate:
            return lambda view: test(view) and not any(exception(view) for exception in exceptions)
        return Compiled(apply(self.matches), self.kinds, self.fields,
                        apply(self.residual) if self.residual else None, self.key)


@dataclass(frozen=True)
class Key:
    """What the engine indexes a rule by: the event's `field` must equal (`eq`), start with
    (`prefix`) or end with (`suffix`) one of `values` for the condition to hold."""

    mode: str
    field: str
    values: frozenset
    few_values: bool  # the field takes a handful of values (direction): a poor key


def _key_rank(key: Key) -> tuple:
    """Prefer equality, on fields with many values, then the longest shortest literal."""
    shortest = min((len(str(value)) for value in key.values), default=0)
    return (not key.few_values, key.mode == "eq", shortest)


def _glob_literal_prefix(glob: str) -> str:
    """The text a glob's matches all start with: what comes before its first wildcard."""
    cut = min((index for index in (glob.find(c) for c in "*?[") if index >= 0), default=len(glob))
    return glob[:cut]


class Errors(Exception):
    """Every problem found in one condition (ConditionErrors, with offsets)."""

    def __init__(self, errors: Sequence[ConditionError]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(error.message for error in self.errors))


class Compiler:
    """Compiles conditions that may refer to `lists` and to `macros` (name -> condition text)."""

    def __init__(self, lists: Mapping[str, Sequence], macros: Mapping[str, str]) -> None:
        self.lists = lists
        self.macro_texts = dict(macros)
        self._macro_trees: dict[str, Node] = {}
        self._macro_problems: dict[str, list[ConditionError]] = {}

    def macro_problems(self, name: str) -> list[ConditionError]:
        """Problems in a macro's own text (reported at the macro; rules using it then fail)."""
        if name not in self._macro_problems:
            try:
                self.compile(self.macro_texts[name], within=(name,))
                self._macro_problems[name] = []
            except Errors as found:
                self._macro_problems[name] = found.errors
        return self._macro_problems[name]

    def compile(self, text: str, *, within: tuple[str, ...] = ()) -> Compiled:
        """Compile a condition; Errors lists what is wrong with it."""
        try:
            tree = parse(text)
        except ConditionError as error:
            raise Errors([error]) from None
        checker = _Checker(self, within)
        tree = checker.expand(tree)
        predicate = checker.build(tree)
        checker.check_kinds(tree)
        if checker.errors:
            raise Errors(checker.errors)
        fields = tuple(dict.fromkeys(checker.fields))
        kinds = _kinds(tree)
        if kinds is not None:
            # Only events of these kinds carry what the condition needs; the engine runs the
            # rule for them alone, and this keeps the stand-alone test the same.
            whole = predicate
            predicate = lambda view: isinstance(kind := view.event.get("kind"), str) and kind in kinds and whole(view)  # noqa: E731
        residual = None
        if kinds is not None and isinstance(tree, And):
            # The engine runs the rule only for events of `kinds`; every `kind` comparison in
            # the conjunction holds for all of them (`kinds` is their intersection).
            rest = tuple(item for item in tree.items if not _is_kind_comparison(item))
            if len(rest) < len(tree.items):
                residual = checker.build(And(rest)) if rest else _always
        return Compiled(predicate, kinds, fields, residual, self._key(tree))

    def _key(self, tree: Node) -> Optional[Key]:
        """A comparison the whole condition needs, by which the engine can look the rule up
        from the event's value: `field = v` / `field in (...)` (mode `eq`; addresses in their
        canonical text), or a literal prefix or suffix the value must have (`startswith`,
        `endswith`, `pmatch`, a glob's text before its first wildcard). None when there is
        none: the rule is then evaluated for every event of its kinds."""
        found = [key for item in (tree.items if isinstance(tree, And) else (tree,))
                 if (key := self._key_of(item)) is not None]
        return max(found, key=_key_rank, default=None)

    def _key_of(self, item: Node) -> Optional[Key]:
        if not isinstance(item, Compare) or item.field == "kind":
            return None
        field = FIELDS_BY_NAME.get(item.field)
        if field is None or field.derived or field.element_type not in ("str", "int", "ip"):
            return None
        value = item.value
        if isinstance(value, ListRef):
            values: tuple = tuple(self.lists.get(value.name, ()))
        elif isinstance(value, ListLiteral):
            values = tuple(literal.value for literal in value.items)
        else:
            values = (value.value,)
        if item.op in ("=", "in"):
            if field.element_type == "ip":
                values = tuple(canonical_address(one) for one in values)
            return Key("eq", field.name, frozenset(values), bool(field.values))
        if field.element_type == "int" or not all(isinstance(one, str) for one in values):
            return None
        if item.op == "startswith":
            prefixes = values
        elif item.op == "pmatch":
            prefixes = tuple(one.rstrip("/") or "/" for one in values)
        elif item.op == "glob":
            prefixes = tuple(_glob_literal_prefix(one) for one in values)
            if all(prefix == one for prefix, one in zip(prefixes, values)):
                return Key("eq", field.name, frozenset(values), bool(field.values))
        elif item.op == "endswith":
            return Key("suffix", field.name, frozenset(values), False) if all(values) else None
        else:
            return None
        return Key("prefix", field.name, frozenset(prefixes), False) if all(prefixes) else None

    def macro_tree(self, name: str) -> Node:
        if name not in self._macro_trees:
            self._macro_trees[name] = parse(self.macro_texts[name])
        return self._macro_trees[name]

    def comparison(self, field: str, op: str, value: Any) -> Compiled:
        """One comparison from data (an exception's field, comparison and YAML value)."""
        node: Node
        if isinstance(value, list):
            literal: Any = ListLiteral(tuple(Literal(item, 0) for item in value), 0)
        elif isinstance(value, str) and value.startswith("@"):
            literal = ListRef(value[1:], 0)
        else:
            literal = Literal(value, 0)
        node = Not(Compare(field, "=", literal, 0), 0) if op == "!=" else Compare(field, op, literal, 0)
        checker = _Checker(self, ())
        predicate = checker.build(node)
        if checker.errors:
            raise Errors(checker.errors)
        return Compiled(predicate, _kinds(node), (field,))


class _Checker:
    def __init__(self, compiler: Compiler, within: tuple[str, ...]) -> None:
        self.compiler = compiler
        self.within = within
        self.errors: list[ConditionError] = []
        self.fields: list[str] = []

    def error(self, message: str, offset: int) -> None:
        self.errors.append(ConditionError(message, offset))

    def expand(self, node: Node, stack: tuple[str, ...] = ()) -> Node:
        """The tree with macro references replaced by the macros' trees."""
        stack = stack or self.within
        if isinstance(node, MacroRef):
            if node.name not in self.compiler.macro_texts:
                if node.name in FIELDS_BY_NAME:
                    self.error(f"{node.name!r} is a field: compare it (`{node.name} = ...`) or test `{node.name} exists`",
                               node.offset)
                else:
                    self.error(f"unknown macro {node.name!r}{_suggest(node.name, self.compiler.macro_texts)}", node.offset)
                return Or(())
            if node.name in stack:
                self.error(f"macro {node.name!r} refers to itself (through {' -> '.join(stack)})", node.offset)
                return Or(())
            if not self.within and self.compiler.macro_problems(node.name):
                # Problems inside a macro are reported at the macro; here, name the reference.
                self.error(f"macro {node.name!r} has errors (see its definition)", node.offset)
                return Or(())
            try:
                tree = self.compiler.macro_tree(node.name)
            except ConditionError:
                self.error(f"macro {node.name!r} does not parse (see its definition)", node.offset)
                return Or(())
            expanded = self.expand(tree, (*stack, node.name))
            return expanded
        if isinstance(node, Not):
            return Not(self.expand(node.item, stack), node.offset)
        if isinstance(node, And):
            return And(tuple(self.expand(item, stack) for item in node.items))
        if isinstance(node, Or):
            return Or(tuple(self.expand(item, stack) for item in node.items))
        return node

    def build(self, node: Node) -> Predicate:
        if isinstance(node, Not):
            inner = self.build(node.item)
            return lambda view: not inner(view)
        if isinstance(node, (And, Or)):
            # Comparisons have no side effects, so cheap ones go first and the costly ones
            # (detector results, patterns) run only when the rest has not decided already.
            parts = tuple(self.build(item) for item in sorted(node.items, key=_cost))
            return _all(parts) if isinstance(node, And) else _any(parts)
        field = self.field(node.field, node.offset)
        if field is None:
            return _never
        self.fields.append(field.name)
        if isinstance(node, Exists):
            return _exists(field)
        if node.op == "!=":
            equal = self.build(Compare(node.field, "=", node.value, node.offset))
            self.fields.pop()
            return lambda view: not equal(view)
        test = self.test(field, node)
        return _never if test is None else _predicate(field, test)

    def field(self, name: str, offset: int) -> Optional[Field]:
        field = FIELDS_BY_NAME.get(name)
        if field is None:
            self.error(f"unknown field {name!r}{_suggest(name, FIELDS_BY_NAME)}", offset)
        return field

    def test(self, field: Field, node: Compare) -> Optional[Test]:
        op, element = node.op, field.element_type
        if op not in OPERATORS[element]:
            allowed = " ".join(sorted(OPERATORS[element]))
            self.error(f"`{op}` does not apply to {field.name} ({field.type}; operators: {allowed})", node.offset)
            return None
        values = self.values(field, node)
        if values is None:
            return None
        return _TESTS[op](self, field, values, node)

    def values(self, field: Field, node: Compare) -> Optional[list]:
        """The literal values of a comparison, checked against the field's type."""
        value, op = node.value, node.op
        if op == "in" and isinstance(value, Literal):
            self.error(f"`in` takes a list: {field.name} in (...) or in @list", value.offset)
            return None
        if op in SCALAR_ONLY and not isinstance(value, Literal):
            self.error(f"`{op}` takes one value, not a list (use `in`)", value.offset)
            return None
        if isinstance(value, ListRef):
            if value.name not in self.compiler.lists:
                self.error(f"unknown list @{value.name}{_suggest(value.name, self.compiler.lists)}", value.offset)
                return None
            items = [(item, value.offset) for item in self.compiler.lists[value.name]]
        elif isinstance(value, ListLiteral):
            items = [(item.value, item.offset) for item in value.items]
        else:
            items = [(value.value, value.offset)]
        checked = []
        for item, offset in items:
            problem = _type_problem(field, op, item)
            if problem:
                self.error(problem, offset)
                return None
            checked.append(item)
        return checked

    def check_kinds(self, node: Node) -> None:
        """A field no event of the condition's kinds carries makes a conjunction always false."""
        if isinstance(node, Not):
            self.check_kinds(node.item)
        elif isinstance(node, Or):
            for item in node.items:
                self.check_kinds(item)
        elif isinstance(node, And):
            stated = [kinds for item in node.items if isinstance(item, Compare) and item.field == "kind"
                      and (kinds := _kinds(item)) is not None]
            allowed = frozenset.intersection(*stated) if stated else None
            for item in node.items:
                field = FIELDS_BY_NAME.get(getattr(item, "field", ""))
                if getattr(item, "op", None) == "!=":
                    field = None  # true where the field is missing
                if allowed is not None and field is not None and field.kinds and not set(field.kinds) & allowed:
                    self.error(f"{field.name} is only on {', '.join(field.kinds)} events, never on "
                               f"{', '.join(sorted(allowed))}: this is always false", item.offset)
                self.check_kinds(item)


def _type_problem(field: Field, op: str, item: Any) -> Optional[str]:
    element = field.element_type
    if element in ("str", "ip"):
        if not isinstance(item, str):
            return f"{field.name} is a {field.type}: compare it with a quoted string, not {item!r}"
        if field.values and op in ("=", "in") and item not in field.values:
            return f"{field.name} is never {item!r} (it is one of: {', '.join(field.values)})"
        if element == "ip" and op == "cidr":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                return f"{item!r} is not an address range (e.g. \"10.0.0.0/8\")"
        if element == "ip" and op in ("=", "in"):
            try:
                ipaddress.ip_address(item)
            except ValueError:
                return f"{item!r} is not an IP address"
        return None
    if element == "bool":
        return None if isinstance(item, bool) else f"{field.name} is true or false, not {item!r}"
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        return f"{field.name} is a number: compare it with a number, not {item!r}"
    if element == "int" and isinstance(item, float) and op in ("=", "in"):
        return f"{field.name} is an integer: it never equals {item!r}"
    return None


# -- operators ---------------------------------------------------------------------------------


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _guard(field: Field) -> Callable[[Any], bool]:
    element = field.element_type
    if element in ("str", "ip"):
        return _is_text
    if element == "bool":
        return lambda value: isinstance(value, bool)
    return _is_number


def _equal(_c: _Checker, field: Field, values: list, _node: Compare) -> Test:
    (expected,) = values
    guard = _guard(field)
    if field.element_type == "bool":
        return lambda value: value is expected
    if field.element_type == "ip":
        address = ipaddress.ip_address(expected)
        return lambda value: guard(value) and (value == expected or _address(value) == address)
    if field.element_type == "str":
        return lambda value: value == expected  # only an equal str is == a str
    return lambda value: value == expected and guard(value)


def _member(_c: _Checker, field: Field, values: list, _node: Compare) -> Test:
    guard = _guard(field)
    if field.element_type == "ip":
        addresses = frozenset(ipaddress.ip_address(item) for item in values)
        return lambda value: guard(value) and _address(value) in addresses
    members = frozenset(values)
    return lambda value: guard(value) and value in members


def _order(op: str) -> Callable[[_Checker, Field, list, Compare], Test]:
    def make(_c: _Checker, _field: Field, values: list, _node: Compare) -> Test:
        (bound,) = values
        if op == "<":
            return lambda value: _is_number(value) and value < bound
        if op == "<=":
            return lambda value: _is_number(value) and value <= bound
        if op == ">":
            return lambda value: _is_number(value) and value > bound
        return lambda value: _is_number(value) and value >= bound

    return make


def _contains(_c: _Checker, _field: Field, values: list, _node: Compare) -> Test:
    needles = tuple(values)
    return lambda value: _is_text(value) and any(needle in value for needle in needles)


def _startswith(_c: _Checker, _field: Field, values: list, _node: Compare) -> Test:
    prefixes = tuple(values)
    return lambda value: _is_text(value) and value.startswith(prefixes)


def _endswith(_c: _Checker, _field: Field, values: list, _node: Compare) -> Test:
    suffixes = tuple(values)
    return lambda value: _is_text(value) and value.endswith(suffixes)


def _pmatch(_c: _Checker, _field: Field, values: list, _node: Compare) -> Test:
    """Path prefix on component boundaries: /home/a/.ssh holds for itself and what is under it."""
    exact = frozenset(path.rstrip("/") or "/" for path in values)
    under = tuple("/" if path == "/" else path + "/" for path in exact)
    return lambda value: _is_text(value) and (value in exact or value.startswith(under))


def _regex(checker: _Checker, _field: Field, values: list, node: Compare) -> Optional[Test]:
    return _re2_any(checker, values, node, lambda pattern: pattern, "regex")


def _glob(checker: _Checker, _field: Field, values: list, node: Compare) -> Optional[Test]:
    return _re2_any(checker, values, node, glob_to_re2, "glob")


def _re2_any(checker: _Checker, values: list, node: Compare, translate: Callable[[str], str], what: str) -> Optional[Test]:
    offsets = _offsets(node.value, len(values))
    for pattern, offset in zip(values, offsets):
        try:
            re2.compile(translate(pattern), RE2_OPTIONS)
        except re2.error as problem:
            checker.error(f"{what} {pattern!r} is not usable by RE2 (linear time: no backreferences or "
                          f"lookaround): {_re2_message(problem)}", offset)
            return None
    whole = "|".join(f"(?:{translate(pattern)})" for pattern in values)
    try:
        compiled = re2.compile(whole, RE2_OPTIONS)
    except re2.error as problem:
        checker.error(f"{what} patterns too large together: {_re2_message(problem)}", node.value.offset)
        return None
    if what == "glob":
        return lambda value: _is_text(value) and compiled.fullmatch(value) is not None
    return lambda value: _is_text(value) and compiled.search(value) is not None


def _cidr(_c: _Checker, _field: Field, values: list, _node: Compare) -> Test:
    networks = tuple(ipaddress.ip_network(item, strict=False) for item in values)

    def test(value: Any) -> bool:
        address = _address(value)
        return address is not None and any(address in network for network in networks)

    return test


_TESTS: dict[str, Callable[[_Checker, Field, list, Compare], Optional[Test]]] = {
    "=": _equal, "in": _member, "<": _order("<"), "<=": _order("<="), ">": _order(">"), ">=": _order(">="),
    "contains": _contains, "startswith": _startswith, "endswith": _endswith, "pmatch": _pmatch,
    "regex": _regex, "glob": _glob, "cidr": _cidr,
}


def glob_to_re2(glob: str) -> str:
    """A shell glob (`*`, `?`, `[...]`, `[!...]`) as an RE2 pattern for the whole string."""
    out, index = [], 0
    while index < len(glob):
        char = glob[index]
        index += 1
        if char == "*":
            out.append("(?s:.*)")
        elif char == "?":
            out.append("(?s:.)")
        elif char == "[":
            end = glob.find("]", index + 1 if glob[index:index + 1] in ("!", "]") else index)
            if end < 0:
                out.append(r"\[")
                continue
            body = glob[index:end]
            index = end + 1
            negate = body.startswith("!")
            body = body[1:] if negate else body
            escaped = "".join("\\" + c if c in "\\^[]" else c for c in body)
            out.append(f"[{'^' if negate else ''}{escaped}]")
        else:
            out.append(re2.escape(char))
    return "".join(out)


def _address(value: Any) -> Optional[Any]:
    if not isinstance(value, str) or len(value) > MAX_ADDRESS_CHARS:
        return None
    return _parsed_address(value)


def canonical_address(value: Any) -> Any:
    """An address's canonical text (`::ffff:a00:1`, not `::FFFF:10.0.0.1`); other values as they are."""
    address = _address(value)
    return value if address is None else str(address)


@functools.lru_cache(maxsize=4096)
def _parsed_address(value: str) -> Optional[Any]:
    """Parsed once per address seen recently: events of one flow repeat theirs."""
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _offsets(value: Any, count: int) -> list[int]:
    if isinstance(value, ListLiteral):
        return [item.offset for item in value.items]
    return [value.offset] * count


def _re2_message(problem: Exception) -> str:
    message = problem.args[0] if problem.args else str(problem)
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)


# -- predicates --------------------------------------------------------------------------------


def _never(_view: EventView) -> bool:
    return False


def _always(_view: EventView) -> bool:
    return True


def _cost(node: Node) -> int:
    """A rough rank of what evaluating a node costs: detector results, then patterns."""
    if isinstance(node, Not):
        return _cost(node.item)
    if isinstance(node, (And, Or)):
        return sum(_cost(item) for item in node.items)
    if isinstance(node, MacroRef):
        return 1
    field = FIELDS_BY_NAME.get(node.field)
    cost = 1000 if field is not None and field.derived and field.name != "process.cmdline" else 1
    if field is not None and field.type.startswith("list["):
        cost *= 4
    if isinstance(node, Compare) and node.op in ("regex", "glob", "cidr", "contains"):
        cost *= 8
    return cost


def _is_kind_comparison(node: Node) -> bool:
    return isinstance(node, Compare) and node.field == "kind" and node.op in ("=", "in")


def _all(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda view: first(view) and second(view)
    if len(parts) == 3:
        first, second, third = parts
        return lambda view: first(view) and second(view) and third(view)

    def every(view: EventView) -> bool:
        for part in parts:
            if not part(view):
                return False
        return True

    return every


def _any(parts: tuple[Predicate, ...]) -> Predicate:
    if not parts:
        return _never
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        first, second = parts
        return lambda view: first(view) or second(view)

    def some(view: EventView) -> bool:
        for part in parts:
            if part(view):
                return True
        return False

    return some


def _read(field: Field) -> Callable[[EventView], Any]:
    if field.name in _DERIVED:
        name = field.name
        return lambda view: view.value(name)
    getter = GETTERS[field.name]
    return lambda view: getter(view.event, view.env)


def _predicate(field: Field, test: Test) -> Predicate:
    read = _read(field)
    if field.type.startswith("list["):
        def any_item(view: EventView) -> bool:
            items = read(view)
            if isinstance(items, list):
                for item in items:
                    if test(item):
                        return True
            return False
        return any_item
    if field.name not in _DERIVED:
        getter = GETTERS[field.name]
        return lambda view: test(getter(view.event, view.env))
    return lambda view: test(read(view))


def _exists(field: Field) -> Predicate:
    read = _read(field)
    if field.type.startswith("list["):
        return lambda view: bool(isinstance(items := read(view), list) and items)
    return lambda view: read(view) is not None


def _kinds(node: Node) -> Optional[frozenset]:
    """The event kinds a condition can hold for; None when it may hold for any."""
    if isinstance(node, Compare):
        if node.op == "!=":
            return None
        if node.field == "kind" and node.op in ("=", "in"):
            value = node.value
            items = [value.value] if isinstance(value, Literal) else (
                [item.value for item in value.items] if isinstance(value, ListLiteral) else None)
            return None if items is None else frozenset(items)
        field = FIELDS_BY_NAME.get(node.field)
        return frozenset(field.kinds) if field is not None and field.kinds else None
    if isinstance(node, Exists):
        field = FIELDS_BY_NAME.get(node.field)
        return frozenset(field.kinds) if field is not None and field.kinds else None
    if isinstance(node, And):
        known = [kinds for kinds in map(_kinds, node.items) if kinds is not None]
        return frozenset.intersection(*known) if known else None
    if isinstance(node, Or):
        found = [_kinds(item) for item in node.items]
        return None if any(kinds is None for kinds in found) else frozenset().union(*found)
    return None


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- output templates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """An `output` string with `%field` references (`%%` is a percent sign)."""

    parts: tuple[tuple[bool, str], ...]  # (is a field, text or field name)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(text for is_field, text in self.parts if is_field)

    def render(self, view: EventView) -> str:
        out = []
        for is_field, text in self.parts:
            out.append(render_value(view.value(text)) if is_field else text)
        return "".join(out)[:MAX_SUMMARY_CHARS]


_TEMPLATE_FIELD = re2.compile(r"%%|%([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)")


def compile_template(text: str) -> Template:
    """Parse an output template; ConditionError at the offset of an unknown field."""
    parts: list[tuple[bool, str]] = []
    position = 0
    for match in _TEMPLATE_FIELD.finditer(text):
        parts.append((False, text[position:match.start()]))
        name = match.group(1)
        if name is None:
            parts.append((False, "%"))
        elif name in FIELDS_BY_NAME:
            parts.append((True, name))
        else:
            raise ConditionError(f"unknown field %{name}{_suggest(name, FIELDS_BY_NAME)}", match.start())
        position = match.end()
    parts.append((False, text[position:]))
    return Template(tuple((is_field, part) for is_field, part in parts if is_field or part))


def render_value(value: Any) -> str:
    """A field value as output text: lists space-separated, missing as <NA>, each bounded."""
    if value is None:
        return "<NA>"
    if isinstance(value, list):
        text = " ".join(render_value(item) for item in value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return text if len(text) <= MAX_RENDERED_CHARS else text[:MAX_RENDERED_CHARS] + "..."
