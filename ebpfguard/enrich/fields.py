"""Kernel values as schema fields: bytes a process controls as text, addresses, socket names.

Pure functions, shared by every part of the enricher.
"""

from __future__ import annotations

import base64
import socket
from typing import Optional


def text(raw: bytes) -> str:
    """Bytes a process controls, as a string: UTF-8 with invalid bytes as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


def argv_fields(argv: tuple[bytes, ...]) -> dict:
    """`argv` as strings, plus `argv_b64` (each element's exact bytes) when any element is
    not valid UTF-8, so the escaped form never hides what was really passed."""
    try:
        return {"argv": [a.decode("utf-8") for a in argv]}  # the usual case: one strict pass
    except UnicodeDecodeError:
        return {"argv": [text(a) for a in argv], "argv_b64": [base64.b64encode(a).decode("ascii") for a in argv]}


def address_text(raw: bytes) -> str:
    """4 or 16 address bytes as text (inet_ntop: what ipaddress gives, at a tenth the cost)."""
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


SO_NETNS_COOKIE = 71  # Linux 5.14+


def netns_cookie_of_this_process() -> Optional[int]:
    """The network-namespace cookie of the namespace we run in (the host's, for the agent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")
    except OSError:
        return None


_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}
_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM", 5: "SOCK_SEQPACKET", 10: "SOCK_PACKET"}
_PROTOCOLS = {0: "default", 1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp", 255: "raw"}
_SOCK_TYPE_MASK = 0xF  # the rest are SOCK_NONBLOCK / SOCK_CLOEXEC


def family_name(family: int) -> str:
    """An address family as its name (the number where there is none)."""
    return _FAMILIES.get(family, str(family))


def protocol_name(protocol: int) -> str:
    """An IP protocol number as its name (the number where there is none)."""
    return _PROTOCOLS.get(protocol, str(protocol))


def socket_fields(family: int, sock_type: int, protocol: int) -> dict:
    """socket(2) arguments as names (numbers where there is no name)."""
    return {
        "family": family_name(family),
        "type": _TYPES.get(sock_type & _SOCK_TYPE_MASK, str(sock_type & _SOCK_TYPE_MASK)),
        "protocol": protocol_name(protocol),
    }


def mark_partial(event: dict, *fields: str) -> None:
    """Add to the event's `partial` list: fields that could not be known."""
    event["partial"] = sorted(set(event.get("partial", [])) | set(fields))
