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


def _any(_char: str) -> bool:
    return True


def _parse_class(pattern: str, start: int) -> Optional[tuple[Accepts, int]]:
    """The `[...]` class opening at `start`, and the index after it; None if never closed."""
    index = start + 1
    negated = index < len(pattern) and pattern[index] in "!^"
    if negated:
        index += 1
    first = index
    ranges: list[tuple[str, str]] = []
    while index < len(pattern) and (pattern[index] != "]" or index == first):
        low = pattern[index]
        if index + 2 < len(pattern) and pattern[index + 1] == "-" and pattern[index + 2] != "]":
            ranges.append((low, pattern[index + 2]))
            index += 3
        else:
            ranges.append((low, low))
            index += 1
    if index >= len(pattern):
        return None
    frozen = tuple(ranges)

    def accepts(char: str) -> bool:
        return any(low <= char <= high for low, high in frozen) != negated

    return accepts, index + 1


@dataclass
class Glob:
    """One compiled glob; `match(text)` is True when the whole text matches."""

    pattern: str
    casefold: bool = False
    classes: bool = True
    _items: list = field(init=False, repr=False)
    _star_mask: int = field(init=False, repr=False)
    _masks: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pattern = self.pattern.lower() if self.casefold else self.pattern
        items: list[Accepts] = []
        star_mask = 0
        index = 0
        while index < len(pattern):
            char = pattern[index]
            if char == "*":
                star_mask |= 1 << len(items)  # the state before the next item loops on anything
                index += 1
                continue
            if char == "?":
                items.append(_any)
                index += 1
                continue
            if char == "[" and self.classes:
                parsed = _parse_class(pattern, index)
                if parsed is not None:
                    items.append(parsed[0])
                    index = parsed[1]
                    continue
            items.append(char.__eq__)
            index += 1
        self._items = items
        self._star_mask = star_mask
        self._masks = {}

    def _mask(self, char: str) -> int:
        """Bit i set when item i accepts `char` (cached: a text has few distinct characters)."""
        mask = self._masks.get(char)
        if mask is None:
            mask = 0
            for position, accepts in enumerate(self._items):
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
        return bool(states >> len(self._items) & 1)


class GlobSet:
    """Any of several globs; plain names (no wildcard) are one set lookup.

    An empty set matches nothing: an empty allowlist must not allow everything.
    """

    def __init__(self, patterns: Iterable[str], *, casefold: bool = False, classes: bool = True) -> None:
        self.casefold = casefold
        self.exact: set[str] = set()
        self.globs: list[Glob] = []
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
        return any(glob.match(text) for glob in self.globs)


def glob_match(pattern: str, text: str, *, casefold: bool = False, classes: bool = True) -> bool:
    """One-off match of `text` against `pattern` (compile a Glob to match many texts)."""
    return Glob(pattern, casefold=casefold, classes=classes).match(text)
