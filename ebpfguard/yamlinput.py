"""Bounds on YAML input (the agent config, rules files) checked before it is built.

PyYAML builds documents recursively (deep nesting ends in a RecursionError traceback) and
without size limits (a list of millions of items, an alias graph that multiplies when
walked). `check_yaml_limits` reads the event stream instead, iteratively and with libyaml
where it is installed, and stops at the first bound broken with the line it is on; the
loaders build the document only after that, so every later step works on bounded input.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlLimits:
    """Far beyond any real config or rules file; each bound names the attack it stops."""

    max_bytes: int = 8 * 1024 * 1024
    max_depth: int = 32           # nesting: RecursionError in the recursive builders
    max_entries: int = 100_000    # items of one list or mapping: quadratic checks downstream
    max_nodes: int = 1_000_000    # scalars, lists and mappings in the whole file
    max_aliases: int = 64         # `*alias` references: billion-laughs graphs


DEFAULT_LIMITS = YamlLimits()


class YamlLimitError(ValueError):
    """A bound broken; `line` is 1-based (0 for the whole file)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def check_yaml_limits(text: str, limits: YamlLimits = DEFAULT_LIMITS) -> None:
    """Raise YamlLimitError at the first bound `text` breaks (yaml.YAMLError if not YAML)."""
    if len(text) > limits.max_bytes:
        raise YamlLimitError(0, f"file is larger than {limits.max_bytes} bytes")
    # One [is_mapping, children] per open collection.
    open_collections: list[list] = []
    nodes = aliases = 0
    for event in yaml.parse(text, Loader=_Parser):
        line = event.start_mark.line + 1
        if isinstance(event, (yaml.CollectionEndEvent,)):
            open_collections.pop()
            continue
        if not isinstance(event, yaml.NodeEvent):
            continue
        nodes += 1
        if nodes > limits.max_nodes:
            raise YamlLimitError(line, f"more than {limits.max_nodes} values in the file")
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > limits.max_aliases:
                raise YamlLimitError(line, f"more than {limits.max_aliases} aliases (*name) in the file")
        if open_collections:
            parent = open_collections[-1]
            parent[1] += 1
            entries = parent[1] // 2 if parent[0] else parent[1]
            if entries > limits.max_entries:
                raise YamlLimitError(line, f"a {'mapping' if parent[0] else 'list'} with more than "
                                           f"{limits.max_entries} entries")
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_collections) >= limits.max_depth:
                raise YamlLimitError(line, f"nested more than {limits.max_depth} levels deep")
            open_collections.append([isinstance(event, yaml.MappingStartEvent), 0])
