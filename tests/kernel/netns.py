"""Network namespaces made by tests (pyroute2): the only place a test sends packets to an
address outside loopback, and the address lives inside the namespace."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from typing import Iterator

from pyroute2 import NetNS, netns


@contextmanager
def isolated_netns(*addresses: str) -> Iterator[str]:
    """A fresh network namespace with `lo` up and carrying `addresses` (CIDR strings)."""
    name = f"ebpfguard-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        with NetNS(name) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            ns.link("set", index=lo, state="up")
            for cidr in addresses:
                addr, _, prefix = cidr.partition("/")
                family = 10 if ":" in addr else 2
                ns.addr("add", index=lo, address=addr, prefixlen=int(prefix), family=family)
        yield name
    finally:
        netns.remove(name)


def enter(name: str) -> None:
    """Move the calling process into the named namespace (for a preexec_fn)."""
    netns.setns(name)
