"""The `response:` section, checked against the loaded rules: errors name file, line and key.

The shape is a contract (design.md, "Responses"): `mode`, `sandboxes`, `rules` (rule id ->
actions), plus `deny_ttl_s`, `deny_dns_answers`, `quarantine_allow`, `freeze_timeout_s`.
An action must be able to find its target in the rule's alerts: `block-flow` needs a flow or
connect (a socket), `deny-connect` a destination (flow, connect, or a DNS answer).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

from ebpfguard.config import ConfigError, key_line

MODES = ("off", "dry-run", "enforce")
ACTIONS = ("block-flow", "deny-connect", "quarantine", "freeze", "kill")

# Event kinds whose alerts can name each action's target.
TARGET_KINDS = {
    "block-flow": frozenset({"flow", "connect"}),
    "deny-connect": frozenset({"flow", "connect", "dns"}),
}
TARGET_WORDS = {"block-flow": "a flow (from flow or connect events)",
                "deny-connect": "a destination (from flow, connect or dns events)"}

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@dataclass(frozen=True)
class AllowEntry:
    """One quarantine allowlist entry: a network and one port, or every port (0)."""

    network: Network
    port: int


@dataclass(frozen=True)
class ResponseConfig:
    mode: str
    sandboxes: tuple[str, ...]
    rules: Mapping[str, tuple[str, ...]]
    deny_ttl_s: float
    deny_dns_answers: bool
    quarantine_allow: tuple[AllowEntry, ...]
    freeze_timeout_s: float

    @property
    def active(self) -> bool:
        """Whether alerts lead to action events at all (dry-run or enforce)."""
        return self.mode != "off" and bool(self.rules)


def parse_allow_entry(text: str) -> AllowEntry:
    """"ADDR", "ADDR/PREFIX", "ADDR:PORT" or "[ADDR6]:PORT"; raises ValueError."""
    text = text.strip()
    port = 0
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [ADDR6]:PORT")
        text, port = host, _port(rest[1:]) if rest else 0
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        text, port = host, _port(port_text)
    network = ipaddress.ip_network(text, strict=False)
    if port and network.prefixlen != network.max_prefixlen:
        raise ValueError(f"{text!r}: a port goes with one address, not a network")
    return AllowEntry(network, port)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{text!r} is not a port")
    return int(text)


def parse_response(section: Mapping, rule_kinds: Mapping[str, Sequence[str]],
                   config_path: Optional[Path]) -> ResponseConfig:
    """Check the merged `response` section; `rule_kinds` maps each loaded rule id to the event
    kinds its detector reads. Raises ConfigError naming file, line and key."""
    where = _locator(config_path)
    mode = section["mode"]
    if mode not in MODES:
        raise ConfigError(f"{where('mode')}: 'response.mode' must be one of {', '.join(MODES)}, not {mode!r}")
    sandboxes = section["sandboxes"]
    if not all(isinstance(s, str) and s for s in sandboxes):
        raise ConfigError(f"{where('sandboxes')}: 'response.sandboxes' must be a list of names or globs")
    for key in ("deny_ttl_s", "freeze_timeout_s"):
        if section[key] < 0:
            raise ConfigError(f"{where(key)}: 'response.{key}' must not be negative")
    allow = []
    for entry in section["quarantine_allow"]:
        try:
            allow.append(parse_allow_entry(str(entry)))
        except ValueError as exc:
            raise ConfigError(f"{where('quarantine_allow')}: 'response.quarantine_allow': {exc}") from None
    if len({entry.network for entry in allow}) != len(allow):
        raise ConfigError(f"{where('quarantine_allow')}: 'response.quarantine_allow' lists a network twice "
                          "(one port, or every port, per address)")
    rules: dict[str, tuple[str, ...]] = {}
    for rule_id, actions in section["rules"].items():
        key = f"'response.rules.{rule_id}'"
        at = where("rules", str(rule_id))
        if rule_id not in rule_kinds:
            raise ConfigError(f"{at}: {key}: no rule has this id (see `ebpfguard rules list`)")
        if isinstance(actions, str):
            actions = [actions]
        if not isinstance(actions, list) or not actions:
            raise ConfigError(f"{at}: {key} must be a list of actions ({', '.join(ACTIONS)})")
        for action in actions:
            if action not in ACTIONS:
                raise ConfigError(f"{at}: {key}: unknown action {action!r} (known: {', '.join(ACTIONS)})")
            needs = TARGET_KINDS.get(action)
            if needs is not None and not needs & set(rule_kinds[rule_id]):
                raise ConfigError(f"{at}: {key}: {action} needs {TARGET_WORDS[action]}, and {rule_id} "
                                  f"alerts on {', '.join(rule_kinds[rule_id])} events only")
            if action == "quarantine" and not allow:
                raise ConfigError(f"{at}: {key}: quarantine needs an allowlist: set 'response.quarantine_allow' "
                                  "(e.g. the sandbox's resolver, \"10.0.0.2:53\")")
        rules[rule_id] = tuple(dict.fromkeys(actions))
    return ResponseConfig(mode, tuple(sandboxes), rules, float(section["deny_ttl_s"]),
                          bool(section["deny_dns_answers"]), tuple(allow), float(section["freeze_timeout_s"]))


def _locator(config_path: Optional[Path]) -> Callable[..., str]:
    def where(*keys: str) -> str:
        line = key_line(config_path, ("response", *keys))
        if line is None:
            return f"{config_path or 'default config'}"
        return f"{config_path}:{line}"
    return where
