"""Shell globs matched in linear time: the one glob matcher for text a sandbox controls.

`fnmatch` and hand-made regexes turn `*` into `.*` and let the regex engine backtrack: a
pattern like `**********x` against a 40-character name takes seconds, and every pattern a
sandbox can write (an ssh config's `Host` line) or every name it chooses (a comm, a cgroup
directory, a host name) is matched against something. Here a glob is run as a small NFA,
one state per non-star item, all states advanced together as the bits of an integer (the
shift-and algorithm): each character of the text costs a few integer operations, whatever
the pattern, so matching is O(len(text) × len(pattern)/64) with no worst case beyond that.

Syntax: `*` (any run), `?` (any one character), and, where `classes=True` (fnmatch's
syntax), `[abc]`, `[a-z]`, `[!abc]`; an unclosed `[` is a literal, as in fnmatch. OpenSSH
patterns have no classes (`classes=False`). `casefold=True` matches without case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

# A single item of a glob: which characters it accepts.
Accepts = Callable[[str], bool]


def _parse_class(pattern: str, start: int) -> Optional[tuple[Accepts, int]]:
    """The `[...]` class opening at `start`, and the index after it; None if never closed.

    One `find` for the closing bracket (a `]` first in the class is a member, as in fnmatch),
    so a pattern of many unclosed `[` stays linear.
    """
    first = start + 1
    negated = first < len(pattern) and pattern[first] in "!^"
    if negated:
        first += 1
    close = pattern.find("]", first + 1)
    if close < 0:
        return None
    body = pattern[first:close]
    ranges: list[tuple[str, str]] = []
    index = 0
    while index < len(body):
        if index + 2 < len(body) and body[index + 1] == "-":
            ranges.append((body[index], body[index + 2]))
            index += 3
        else:
            ranges.append((body[index], body[index]))
            index += 1
    frozen = tuple(ranges)

    def accepts(char: str) -> bool:
        return any(low <= char <= high for low, high in frozen) != negated

    return accepts, close + 1


@dataclass
class Glob:
    """One compiled glob; `match(text)` is True when the whole text matches."""

    pattern: str
    casefold: bool = False
    classes: bool = True
    _length: int = field(init=False, repr=False)
    _star_mask: int = field(init=False, repr=False)
    _literals: dict = field(init=False, repr=False)  # char -> positions of that literal
    _any_mask: int = field(init=False, repr=False)  # positions of `?`
    _classes: list = field(init=False, repr=False)  # (position, accepts) of `[...]`
    _masks: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pattern = self.pattern.lower() if self.casefold else self.pattern
        literals: dict[str, int] = {}
        classes: list[tuple[int, Accepts]] = []
        star_mask = any_mask = 0
        position = index = 0
        while index < len(pattern):
            char = pattern[index]
            index += 1
            if char == "*":
                star_mask |= 1 << position  # the state before the next item loops on anything
                continue
            if char == "?":
                any_mask |= 1 << position
            elif char == "[" and self.classes and (parsed := _parse_class(pattern, index - 1)) is not None:
                classes.append((position, parsed[0]))
                index = parsed[1]
            else:
                literals[char] = literals.get(char, 0) | 1 << position
            position += 1
        self._length = position
        self._star_mask = star_mask
        self._literals = literals
        self._any_mask = any_mask
        self._classes = classes
        self._masks = {}

    def _mask(self, char: str) -> int:
        """Bit i set when item i accepts `char` (cached: a text has few distinct characters)."""
        mask = self._masks.get(char)
        if mask is None:
            mask = self._literals.get(char, 0) | self._any_mask
            for position, accepts in self._classes:
                if accepts(char):
                    mask |= 1 << position
            if len(self._masks) < 4096:
                self._masks[char] = mask
        return mask

    def match(self, text: str) -> bool:
        """Whether the whole of `text` matches the glob."""
        if self.casefold:
            text = text.lower()
        stars = self._star_mask
        states = 1
        for char in text:
            states = ((states & self._mask(char)) << 1) | (states & stars)
            if not states:
                return False
        return bool(states >> self._length & 1)


# GlobSet's remembered answers: texts up to this long, this many of them (under 1 MiB).
MAX_REMEMBERED_TEXT = 256
MAX_REMEMBERED_ANSWERS = 2048


class GlobSet:
    """Any of several globs; plain names (no wildcard) are one set lookup.

    An empty set matches nothing: an empty allowlist must not allow everything.
    """

    def __init__(self, patterns: Iterable[str], *, casefold: bool = False, classes: bool = True) -> None:
        self.casefold = casefold
        self.exact: set[str] = set()
        self.globs: list[Glob] = []
        self._answers: dict[str, bool] = {}
        wildcards = "*?[" if classes else "*?"
        for pattern in patterns:
            if any(char in pattern for char in wildcards):
                self.globs.append(Glob(pattern, casefold=casefold, classes=classes))
            else:
                self.exact.add(pattern.lower() if casefold else pattern)

    def match(self, text: str) -> bool:
        """Whether `text` matches any of the globs."""
        if (text.lower() if self.casefold else text) in self.exact:
            return True
        if not self.globs:
            return False
        # Program names repeat (every exec of /bin/true asks again): short texts' answers
        # are kept, all forgotten at once when too many.
        known = self._answers.get(text)
        if known is None:
            known = any(glob.match(text) for glob in self.globs)
            if len(text) <= MAX_REMEMBERED_TEXT:
                if len(self._answers) >= MAX_REMEMBERED_ANSWERS:
                    self._answers.clear()
                self._answers[text] = known
        return known


def glob_match(pattern: str, text: str, *, casefold: bool = False, classes: bool = True) -> bool:
    """One-off match of `text` against `pattern` (compile a Glob to match many texts)."""
    return Glob(pattern, casefold=casefold, classes=classes).match(text)
