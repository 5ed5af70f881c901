"""`egress.internal`: a sandbox connecting inward: private networks, metadata, the host.

A sandbox's business is the internet it was given; a connect to the cloud metadata service
(credentials), the host's own services, or the private network around it is the first step of
a breakout. Categories, first match wins:

| category    | addresses                                               | severity  |
| ----------- | ------------------------------------------------------- | --------- |
| metadata    | the `metadata_addresses` list (169.254.169.254, ...)    | critical  |
| host        | the `host_addresses` list (the host's own addresses)    | high      |
| loopback    | 127/8, ::1, 0.0.0.0 and :: (which reach the local host) | high      |
| link_local  | 169.254/16, fe80::/10                                   | rule's    |
| private     | 10/8, 172.16/12, 192.168/16                             | rule's    |
| cgnat       | 100.64/10                                               | rule's    |
| ula         | fc00::/7                                                | rule's    |

IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are read as the IPv4 address they carry.
Loopback reaches the host only when the sandbox shares the host's network namespace: the
enriched connect event says so with `host_netns: true`. Without that field (minimal replay
events) loopback is the sandbox's own and does not alert.

Connects from `host` never alert unless the rule's `include_host` param is true. Per-sandbox
allowances (`allowed_destinations: [{sandbox: "sandbox-*", cidrs: [...], ports: [...]}]`)
let a sandbox reach its own resolver, say. Failed connects alert too: the attempt is the
signal, and `retval` is in the evidence.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ebpfguard.detect.addresses import IPAddress, parse_address
from ebpfguard.detect.execinfo import sandbox_name
from ebpfguard.detect.registry import Detector, Event, Finding, RuleContext, detector
from ebpfguard.globs import glob_match

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

LOOPBACK = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128")]
RANGES: list[tuple[str, IPNetwork]] = [
    (category, ipaddress.ip_network(n)) for category, n in (
        ("link_local", "169.254.0.0/16"), ("link_local", "fe80::/10"),
        ("private", "10.0.0.0/8"), ("private", "172.16.0.0/12"),
        ("private", "192.168.0.0/16"), ("cgnat", "100.64.0.0/10"), ("ula", "fc00::/7"),
    )
]
SEVERITY = {"metadata": "critical", "host": "high", "loopback": "high"}


@dataclass(frozen=True)
class AllowedDestination:
    """Destinations one group of sandboxes may reach: cidrs, and ports if listed."""

    sandbox: str  # a glob over sandbox names
    cidrs: tuple[IPNetwork, ...]
    ports: tuple[int, ...] = ()

    @classmethod
    def from_param(cls, entry: Mapping[str, Any]) -> "AllowedDestination":
        return cls(sandbox=str(entry.get("sandbox", "*")),
                   cidrs=tuple(ipaddress.ip_network(c, strict=False)
                               for c in entry.get("cidrs", ())),
                   ports=tuple(int(p) for p in entry.get("ports", ())))

    def allows(self, sandbox: str, address: IPAddress, port: Any) -> bool:
        return (glob_match(self.sandbox, sandbox)
                and any(address in cidr for cidr in self.cidrs if cidr.version == address.version)
                and (not self.ports or port in self.ports))


def classify(address: IPAddress, metadata: Sequence[IPAddress], host: Sequence[IPAddress],
             host_netns: bool) -> Optional[tuple[str, str]]:
    """The category of an inward destination and the network it matched, or None."""
    if address in metadata:
        return "metadata", str(address)
    if address in host:
        return "host", str(address)
    for network in LOOPBACK:
        if address.version == network.version and address in network:
            return ("loopback", str(network)) if host_netns else None
    for category, network in RANGES:
        if address.version == network.version and address in network:
            return category, str(network)
    return None


@detector("egress.internal", kinds=("connect",))
class InternalEgress(Detector):
    """Connects from sandboxes to private, link-local, metadata and host addresses."""

    def __init__(self, ctx: RuleContext) -> None:
        super().__init__(ctx)
        self.metadata = [a for a in map(parse_address, ctx.params.get("metadata_addresses", ()))
                         if a is not None]
        self.host = [a for a in map(parse_address, ctx.params.get("host_addresses", ()))
                     if a is not None]
        self.include_host = bool(ctx.params.get("include_host", False))
        self.allowed = [AllowedDestination.from_param(e)
                        for e in ctx.params.get("allowed_destinations", ())]
        # A connect storm goes to few addresses: each is classified (and written) once.
        self._classified = functools.lru_cache(maxsize=4096)(self._classify)

    def _classify(self, address: IPAddress, host_netns: bool) -> Optional[tuple[str, str, str]]:
        found = classify(address, self.metadata, self.host, host_netns)
        return None if found is None else (*found, str(address))

    def on_event(self, event: Event) -> Iterable[Finding]:
        sandbox = sandbox_name(event)
        if sandbox == "host" and not self.include_host:
            return []
        address = parse_address(event.get("daddr"))
        if address is None:
            return []
        port = event.get("dport")
        found = self._classified(address, event.get("host_netns") is True)
        if found is None or any(a.allows(sandbox, address, port) for a in self.allowed):
            return []
        category, network, text = found
        return [Finding(
            summary=f"sandbox {sandbox} connects to {category.replace('_', '-')} address "
                    f"{text} port {port}",
            evidence={"daddr": text, "dport": port, "category": category,
                      "network": network, "retval": event.get("retval")},
            severity=SEVERITY.get(category),
        )]
