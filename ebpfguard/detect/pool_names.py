"""Names for `miner.pool`: a domain list matched on label boundaries, and the name->address
pairs the agent saw in DNS answers on the wire.

The agent never resolves a name itself: Falco's resolving of its own pool list sent DNS
queries that other tools flagged (falco#835) and slowed its start (falco#2680). A connect to
an address is tied to names only through answers the sandbox itself received.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Hashable, Iterable, Mapping, Optional, Sequence

from ebpfguard.detect.addresses import parse_address
from ebpfguard.enrich.wire.dns import Answer

NS_PER_S = 1_000_000_000


class DomainList:
    """Domains matched as suffixes on label boundaries.

    `nanopool.org` matches `nanopool.org` and `xmr-eu1.nanopool.org`, never
    `evilnanopool.org` or `nanopool.org.evil.com`.
    """

    def __init__(self, domains: Iterable[str]) -> None:
        self.domains = frozenset(filter(None, (normalize_name(domain) for domain in domains)))

    def match(self, name: str) -> Optional[str]:
        """The most specific list entry that `name` is or lies under; None if none."""
        labels = normalize_name(name).split(".")
        for start in range(len(labels)):
            suffix = ".".join(labels[start:])
            if suffix in self.domains:
                return suffix
        return None


def normalize_name(name: str) -> str:
    """A name as the lists hold them: lower case, no trailing dot, no leading `*.` or `.`."""
    name = name.strip().lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]
    return name.lstrip(".")


def normalize_address(value: Any) -> Optional[str]:
    """An IP address as text (IPv4-mapped IPv6 as the IPv4 it carries); None if not one."""
    return _normalized_address_text(str(value))


@functools.lru_cache(maxsize=4096)  # every connect asks: hosts connect to few distinct addresses
def _normalized_address_text(value: str) -> Optional[str]:
    address = parse_address(value)
    return None if address is None else str(address)


def answers_from_records(records: Any) -> list[Answer]:
    """Answers from a `dns` event's `answers` field (`[{"name","type","ttl","value"}]`).

    Malformed entries are skipped: events may be hand-written (replay).
    """
    if not isinstance(records, list):
        return []
    answers = []
    for record in records:
        if not isinstance(record, Mapping):
            continue
        name, rtype, ttl, value = (record.get(key) for key in ("name", "type", "ttl", "value"))
        if isinstance(name, str) and isinstance(rtype, str) and (value is None or isinstance(value, str)):
            answers.append(Answer(name, rtype.upper(), ttl if isinstance(ttl, int) and ttl >= 0 else 0, value))
    return answers


class ObservedNames:
    """Address -> the names DNS answers gave it, per scope (a sandbox); bounded, LRU.

    A CNAME chain gives the address every name along it: `xmr-eu1.nanopool.org CNAME
    lb.example`, `lb.example A 192.0.2.10` gives 192.0.2.10 both names. An entry lives for
    its record's TTL, raised to `min_ttl_s` (clients connect just after a TTL-0 answer and
    many cache past the TTL) and capped at `max_ttl_s`. Times are the events' own, so replay
    decides as the live agent did; without a time an entry does not expire (only LRU).
    """

    def __init__(self, max_addresses: int = 4096, max_names_per_address: int = 8,
                 min_ttl_s: int = 300, max_ttl_s: int = 86400) -> None:
        if max_addresses < 1 or max_names_per_address < 1 or not 0 <= min_ttl_s <= max_ttl_s:
            raise ValueError("ObservedNames bounds must be positive, min_ttl_s <= max_ttl_s")
        self.max_addresses = max_addresses
        self.max_names_per_address = max_names_per_address
        self.min_ttl_s = min_ttl_s
        self.max_ttl_s = max_ttl_s
        # (scope, address) -> {name: expiry in ns, or None}, most recently used last.
        self._names: OrderedDict[tuple[Hashable, str], OrderedDict[str, Optional[int]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._names)

    def learn(self, answers: Sequence[Answer], now_ns: Optional[int] = None, scope: Hashable = None) -> None:
        """Remember the addresses of one DNS response's answers under every name leading to them."""
        aliases: dict[str, list[str]] = {}  # CNAME target -> the names that point at it
        for answer in answers:
            if answer.type == "CNAME" and answer.value:
                aliases.setdefault(normalize_name(answer.value), []).append(normalize_name(answer.name))
        for answer in answers:
            address = normalize_address(answer.value) if answer.type in ("A", "AAAA") else None
            if address is None:
                continue
            ttl = min(max(answer.ttl, self.min_ttl_s), self.max_ttl_s)
            expiry = None if now_ns is None else now_ns + ttl * NS_PER_S
            for name in _chain(normalize_name(answer.name), aliases):
                self._remember(scope, address, name, expiry)

    def names_for(self, address: str, now_ns: Optional[int] = None, scope: Hashable = None) -> list[str]:
        """The unexpired names seen for `address` in `scope`, most recently learned last."""
        key = (scope, normalize_address(address) or address)
        names = self._names.get(key)
        if names is None:
            return []
        self._names.move_to_end(key)
        return [name for name, expiry in names.items() if expiry is None or now_ns is None or now_ns < expiry]

    def _remember(self, scope: Hashable, address: str, name: str, expiry: Optional[int]) -> None:
        key = (scope, address)
        names = self._names.setdefault(key, OrderedDict())
        self._names.move_to_end(key)
        names.pop(name, None)
        names[name] = expiry
        while len(names) > self.max_names_per_address:
            names.popitem(last=False)
        while len(self._names) > self.max_addresses:
            self._names.popitem(last=False)


def _chain(name: str, aliases: Mapping[str, list[str]]) -> list[str]:
    """`name` and every name whose CNAMEs lead to it (cycles and all, each once)."""
    found = [name]
    seen = {name}
    for current in found:  # `found` grows while it is walked: a breadth-first search
        for alias in aliases.get(current, ()):
            if alias not in seen:
                seen.add(alias)
                found.append(alias)
    return found
