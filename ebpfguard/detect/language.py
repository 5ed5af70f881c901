"""The condition language of user rules: tokens and a parser into a small syntax tree.

    condition := or
    or        := and ("or" and)*
    and       := unary ("and" unary)*
    unary     := "not" unary | "(" condition ")" | field OPERATOR value | field "exists" | MACRO
    value     := STRING | NUMBER | true | false | "@"LIST | "(" value ("," value)* ")" | "[" ... "]"

Hand-written rather than generated (lark and the like): the grammar is a dozen lines, a
precedence-climbing parser reads each token once (linear time, no backtracking, no
dependency), and the errors name what was expected in our own words, at an exact offset.
Nesting is bounded so a hostile or careless condition cannot exhaust the stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

MAX_CONDITION_CHARS = 65536
MAX_NESTING = 64

# Operators that compare a field with a value. `!=` is `not =`.
COMPARISONS = ("=", "!=", "<", "<=", ">", ">=", "in", "contains", "startswith", "endswith", "glob",
               "pmatch", "cidr", "regex")
KEYWORDS = frozenset({"and", "or", "not", "exists", "true", "false", *COMPARISONS})
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<list>@[A-Za-z_][A-Za-z0-9_.-]*)
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
  | (?P<string>["'])
  | (?P<symbol><=|>=|!=|=|<|>|\(|\)|\[|\]|,)
""", re.VERBOSE)


class ConditionError(ValueError):
    """A condition that cannot be used; `offset` is where in its text (0-based)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Token:
    kind: str  # name, keyword, list, number, string, symbol, end
    text: str
    value: object
    offset: int


# -- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: Union[str, int, float, bool]
    offset: int


@dataclass(frozen=True)
class ListLiteral:
    items: tuple[Literal, ...]
    offset: int


@dataclass(frozen=True)
class ListRef:
    name: str
    offset: int


Value = Union[Literal, ListLiteral, ListRef]


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Value
    offset: int  # of the field name


@dataclass(frozen=True)
class Exists:
    field: str
    offset: int


@dataclass(frozen=True)
class MacroRef:
    name: str
    offset: int


@dataclass(frozen=True)
class Not:
    item: "Node"
    offset: int


@dataclass(frozen=True)
class And:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    items: tuple["Node", ...]


Node = Union[Compare, Exists, MacroRef, Not, And, Or]


# -- tokens ------------------------------------------------------------------------------------


def tokenize(text: str) -> list[Token]:
    """The tokens of a condition, ending with an `end` token; ConditionError on a bad character."""
    if len(text) > MAX_CONDITION_CHARS:
        raise ConditionError(f"a condition is at most {MAX_CONDITION_CHARS} characters", MAX_CONDITION_CHARS)
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ConditionError(f"unexpected character {text[pos]!r}", pos)
        kind = match.lastgroup
        if kind == "string":
            value, end = _string(text, pos)
            tokens.append(Token("string", text[pos:end], value, pos))
            pos = end
            continue
        word = match.group()
        if kind == "name" and word in KEYWORDS:
            kind = "keyword"
        if kind == "number":
            value: object = float(word) if "." in word else int(word)
        elif kind == "list":
            value = word[1:]
        else:
            value = word
        if kind != "space":
            tokens.append(Token(kind, word, value, pos))
        pos = match.end()
    tokens.append(Token("end", "", None, len(text)))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    """A quoted string from `start` (its opening quote): its value and the offset after it."""
    quote, out, pos = text[start], [], start + 1
    while pos < len(text):
        char = text[pos]
        if char == quote:
            return "".join(out), pos + 1
        if char == "\\":
            if pos + 1 >= len(text):
                break
            escaped = text[pos + 1]
            # Any other escaped character keeps its backslash, so a regex reads as written:
            # "\d+\.\d+" is the RE2 pattern \d+\.\d+.
            out.append(ESCAPES.get(escaped, "\\" + escaped))
            pos += 2
            continue
        out.append(char)
        pos += 1
    raise ConditionError("string not closed", start)


# -- parser ------------------------------------------------------------------------------------


def parse(text: str) -> Node:
    """The syntax tree of a condition; ConditionError (with an offset) if it is not one."""
    parser = _Parser(tokenize(text))
    node = parser.condition(0)
    token = parser.peek()
    if token.kind != "end":
        raise ConditionError(f"expected `and`, `or` or the end of the condition, found {_describe(token)}", token.offset)
    return node


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        token = self.peek()
        self.pos += 1
        return token

    def accept(self, text: str) -> Optional[Token]:
        token = self.peek()
        if token.kind in ("keyword", "symbol") and token.text == text:
            self.pos += 1
            return token
        return None

    def condition(self, depth: int) -> Node:
        items = [self.conjunction(depth)]
        while self.accept("or"):
            items.append(self.conjunction(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self, depth: int) -> Node:
        items = [self.unary(depth)]
        while self.accept("and"):
            items.append(self.unary(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def unary(self, depth: int) -> Node:
        token = self.peek()
        if depth >= MAX_NESTING:
            raise ConditionError(f"nested more than {MAX_NESTING} deep", token.offset)
        if self.accept("not"):
            return Not(self.unary(depth + 1), token.offset)
        if self.accept("("):
            node = self.condition(depth + 1)
            if not self.accept(")"):
                raise ConditionError(f"expected `)` to close the `(` at offset {token.offset}, found {_describe(self.peek())}",
                                     self.peek().offset)
            return node
        if token.kind != "name":
            raise ConditionError(f"expected a field, a macro, `not` or `(`, found {_describe(token)}", token.offset)
        self.take()
        following = self.peek()
        if following.kind == "keyword" and following.text == "exists":
            self.take()
            return Exists(token.text, token.offset)
        if following.kind in ("keyword", "symbol") and following.text in COMPARISONS:
            self.take()
            return Compare(token.text, following.text, self.value(), token.offset)
        if following.kind in ("end", "symbol") or (following.kind == "keyword" and following.text in ("and", "or")):
            return MacroRef(token.text, token.offset)
        raise ConditionError(f"expected an operator after {token.text!r}, found {_describe(following)}", following.offset)

    def value(self) -> Value:
        token = self.peek()
        for opening, closing in (("(", ")"), ("[", "]")):
            if self.accept(opening):
                items = [self.scalar()]
                while self.accept(","):
                    items.append(self.scalar())
                if not self.accept(closing):
                    raise ConditionError(f"expected `,` or `{closing}` in the list, found {_describe(self.peek())}",
                                         self.peek().offset)
                return ListLiteral(tuple(items), token.offset)
        if token.kind == "list":
            self.take()
            return ListRef(str(token.value), token.offset)
        return self.scalar()

    def scalar(self) -> Literal:
        token = self.take()
        if token.kind in ("string", "number"):
            return Literal(token.value, token.offset)  # type: ignore[arg-type]
        if token.kind == "keyword" and token.text in ("true", "false"):
            return Literal(token.text == "true", token.offset)
        hint = " (quote strings: \"...\")" if token.kind in ("name", "keyword") else ""
        raise ConditionError(f"expected a value, found {_describe(token)}{hint}", token.offset)


def _describe(token: Token) -> str:
    if token.kind == "end":
        return "the end of the condition"
    return f"`{token.text}`" if len(token.text) <= 40 else f"`{token.text[:40]}...`"

