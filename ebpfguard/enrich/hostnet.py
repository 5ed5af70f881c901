"""The host's own network addresses (netlink, through pyroute2), for `egress.internal`: a
sandbox connecting to the host's public address reaches the host as surely as loopback."""

from __future__ import annotations

import ipaddress


def host_addresses() -> list[str]:
    """Every address on the interfaces of the agent's network namespace, loopback left out
    (the rule has its own category for it); empty if netlink cannot be read."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with IPRoute() as ipr:
            found = {msg.get_attr("IFA_ADDRESS") for msg in ipr.get_addr()}
    except (OSError, NetlinkError):
        return []
    return sorted(a for a in found if a and not ipaddress.ip_address(a).is_loopback)
