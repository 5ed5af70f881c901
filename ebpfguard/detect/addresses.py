"""IP addresses as detectors read them from events."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Optional, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_address(value: Any) -> Optional[IPAddress]:
    """An IP address from an event field, IPv4-mapped IPv6 unwrapped; None if not an IP."""
    return _parse_address_text(str(value))


@functools.lru_cache(maxsize=4096)  # hosts connect to few distinct addresses, many times
def _parse_address_text(value: str) -> Optional[IPAddress]:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
