"""The host's own network addresses (an rtnetlink address dump), for `egress.internal`: a
sandbox connecting to the host's public address reaches the host as surely as loopback.

One request and its answer, read with the socket module: a netlink library (pyroute2 and
what it imports) would hold about 15 MiB of the agent's memory for a list read once.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR = struct.Struct("=HH")       # len, type
_ADDRESS_BYTES = {socket.AF_INET: 4, socket.AF_INET6: 16}
RECV_TIMEOUT_S = 2.0
MAX_REPLY_BYTES = 1 << 24  # a host with that many addresses is not one we can list


class NetlinkError(OSError):
    """The kernel answered the dump with an error."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def dump_request(seq: int) -> bytes:
    """An RTM_GETADDR dump request for every family."""
    body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


def _address(family: int, attrs: bytes) -> str | None:
    """IFA_LOCAL (the interface's own address), else IFA_ADDRESS (the same, except on a
    point-to-point link, where it is the peer's)."""
    found: dict[int, bytes] = {}
    pos = 0
    while pos + _RTATTR.size <= len(attrs):
        length, kind = _RTATTR.unpack_from(attrs, pos)
        if length < _RTATTR.size or pos + length > len(attrs):
            break
        found[kind] = attrs[pos + _RTATTR.size:pos + length]
        pos += _align(length)
    raw = found.get(IFA_LOCAL, found.get(IFA_ADDRESS))
    if raw is None or len(raw) != _ADDRESS_BYTES[family]:
        return None
    return str(ipaddress.ip_address(raw))


def parse_addresses(data: bytes) -> tuple[list[str], bool]:
    """The addresses in one read of the dump's reply, and whether the dump ended there.
    Raises NetlinkError on the kernel's error message."""
    addresses: list[str] = []
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > len(data):
            break
        if kind == NLMSG_DONE:
            return addresses, True
        if kind == NLMSG_ERROR:
            errno = -struct.unpack_from("=i", data, pos + _NLMSGHDR.size)[0] if length >= _NLMSGHDR.size + 4 else 0
            raise NetlinkError(errno, f"netlink address dump failed (errno {errno})")
        body = pos + _NLMSGHDR.size
        if kind == RTM_NEWADDR and length >= _NLMSGHDR.size + _IFADDRMSG.size:
            family = data[body]
            if family in _ADDRESS_BYTES:
                address = _address(family, data[body + _IFADDRMSG.size:pos + length])
                if address is not None:
                    addresses.append(address)
        pos += _align(length)
    return addresses, False


def host_addresses() -> list[str]:
    """Every address on the interfaces of the agent's network namespace, loopback left out
    (the rule has its own category for it); empty if netlink cannot be read."""
    found: set[str] = set()
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
            sock.settimeout(RECV_TIMEOUT_S)
            sock.bind((0, 0))
            sock.sendall(dump_request(1))
            received, done = 0, False
            while not done and received < MAX_REPLY_BYTES:
                data = sock.recv(1 << 16)
                if not data:
                    break
                received += len(data)
                addresses, done = parse_addresses(data)
                found.update(addresses)
    except OSError:
        return []
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)
