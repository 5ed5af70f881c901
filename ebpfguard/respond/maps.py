"""The response maps of bpf/response.h, written from userspace.

The maps belong to the agent's own loaded programs (bcc keeps their fds): nothing is pinned,
so when the agent exits they are freed with the programs and nothing stays enforced. The
global `response_state` word is rewritten after every change so the hooks look further only
while something is in force.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from typing import Sequence

from ebpfguard.respond.config import AllowEntry

# Mirrors of bpf/response.h's #defines.
RESPONSE_BLOCKED_FLOWS = 0x1
RESPONSE_SANDBOXES = 0x2
RESPONSE_QUARANTINE = 0x4
SANDBOX_DENIES = 0x1
SANDBOX_QUARANTINED = 0x2
RESPONSE_MAX_LEVEL = 16
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


class MapsError(Exception):
    """A map update the kernel refused (a full map, say)."""


def address_bytes(address: str) -> tuple[int, bytes]:
    """(AF_INET or AF_INET6, 16 bytes with IPv4 in the first 4) for an address string."""
    ip = ipaddress.ip_address(address)
    return FAMILIES[ip.version], ip.packed.ljust(16, b"\0")


class ResponseMaps:
    """Typed access to the response maps of a loaded bcc.BPF object."""

    def __init__(self, bpf) -> None:
        self.state = bpf["response_state"]
        self.blocked = bpf["blocked_flows"]
        self.sandboxes = bpf["acted_sandboxes"]
        self.denied = bpf["denied_dests"]
        self.allow = bpf["quarantine_allow"]
        self._blocked_count = 0
        self._sandbox_flags: dict[int, tuple[int, int]] = {}  # cgroup id -> (flags, level)
        self._denies: Counter = Counter()  # cgroup id -> denied destinations

    def set_allowlist(self, entries: Sequence[AllowEntry]) -> None:
        for entry in entries:
            key = self.allow.Key()
            family = FAMILIES[entry.network.version]
            key.prefixlen = 8 + entry.network.prefixlen
            key.family = family
            packed = entry.network.network_address.packed
            for i, byte in enumerate(packed):
                key.addr[i] = byte
            self._update(self.allow, key, self.allow.Leaf(entry.port))

    def block_flow(self, cookie: int, now_ns: int) -> None:
        key = self.blocked.Key(cookie)
        if key not in self.blocked:
            self._blocked_count += 1
        self._update(self.blocked, key, self.blocked.Leaf(now_ns))
        self._write_state()

    def unblock_flow(self, cookie: int) -> None:
        if self._delete(self.blocked, self.blocked.Key(cookie)):
            self._blocked_count -= 1
        self._write_state()

    def deny(self, cgroup_id: int, level: int, address: str, port: int, until_ns: int) -> None:
        """Refuse connects from the sandbox to address:port (port 0: any) until `until_ns`
        (CLOCK_MONOTONIC, as bpf_ktime_get_ns; 0: no expiry)."""
        key = self._deny_key(cgroup_id, address, port)
        if key not in self.denied:
            self._denies[cgroup_id] += 1
        self._update(self.denied, key, self.denied.Leaf(until_ns))
        self._set_sandbox(cgroup_id, level, SANDBOX_DENIES, True)

    def undeny(self, cgroup_id: int, level: int, address: str, port: int) -> None:
        if self._delete(self.denied, self._deny_key(cgroup_id, address, port)):
            self._denies[cgroup_id] -= 1
        if self._denies[cgroup_id] <= 0:
            del self._denies[cgroup_id]
            self._set_sandbox(cgroup_id, level, SANDBOX_DENIES, False)

    def quarantine(self, cgroup_id: int, level: int, on: bool) -> None:
        self._set_sandbox(cgroup_id, level, SANDBOX_QUARANTINED, on)

    def _deny_key(self, cgroup_id: int, address: str, port: int):
        family, raw = address_bytes(address)
        key = self.denied.Key()
        key.sandbox = cgroup_id
        for i, byte in enumerate(raw):
            key.addr[i] = byte
        key.family = family
        key.port = port
        return key

    def _set_sandbox(self, cgroup_id: int, level: int, flag: int, on: bool) -> None:
        if not 0 < level < RESPONSE_MAX_LEVEL:
            raise MapsError(f"the sandbox's cgroup is {level} levels deep; the kernel checks 1 to {RESPONSE_MAX_LEVEL - 1}")
        flags, _ = self._sandbox_flags.get(cgroup_id, (0, level))
        flags = flags | flag if on else flags & ~flag
        key = self.sandboxes.Key(cgroup_id)
        if flags:
            leaf = self.sandboxes.Leaf()
            leaf.flags = flags
            self._update(self.sandboxes, key, leaf)
            self._sandbox_flags[cgroup_id] = (flags, level)
        else:
            self._delete(self.sandboxes, key)
            self._sandbox_flags.pop(cgroup_id, None)
        self._write_state()

    def _write_state(self) -> None:
        flags, levels = 0, 0
        if self._blocked_count > 0:
            flags |= RESPONSE_BLOCKED_FLOWS
        for sandbox_flags, level in self._sandbox_flags.values():
            flags |= RESPONSE_SANDBOXES
            levels |= 1 << level
            if sandbox_flags & SANDBOX_QUARANTINED:
                flags |= RESPONSE_QUARANTINE
        leaf = self.state.Leaf()
        leaf.flags = flags
        leaf.levels = levels
        self._update(self.state, self.state.Key(0), leaf)

    @staticmethod
    def _update(table, key, leaf) -> None:
        try:
            table[key] = leaf
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception on a failed update
            raise MapsError(f"the kernel refused an update of {table._name!r}: {exc}") from None

    @staticmethod
    def _delete(table, key) -> bool:
        try:
            del table[key]
        except KeyError:
            return False
        return True

