"""The host's addresses from an rtnetlink dump: the parser on crafted replies, and the live
dump against iproute2's own listing of this host."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import subprocess

import pytest

from ebpfguard.enrich.hostnet import (IFA_ADDRESS, IFA_LOCAL, NLMSG_DONE, NLMSG_ERROR, RTM_NEWADDR, NetlinkError,
                                      dump_request, host_addresses, parse_addresses)


def attr(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 2, 1, 0) + body


def newaddr(family: int, *attrs: bytes) -> bytes:
    return message(RTM_NEWADDR, struct.pack("=BBBBI", family, 24, 0, 0, 2) + b"".join(attrs))


def v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def test_addresses_of_both_families_are_read_until_done():
    reply = (newaddr(socket.AF_INET, attr(IFA_ADDRESS, v4("192.0.2.7")), attr(IFA_LOCAL, v4("192.0.2.7")))
             + newaddr(socket.AF_INET6, attr(IFA_ADDRESS, ipaddress.IPv6Address("2001:db8::5").packed))
             + message(NLMSG_DONE, struct.pack("=i", 0)))
    assert parse_addresses(reply) == (["192.0.2.7", "2001:db8::5"], True)


def test_a_point_to_point_link_gives_its_local_address_not_the_peers():
    reply = newaddr(socket.AF_INET, attr(IFA_ADDRESS, v4("198.51.100.1")), attr(IFA_LOCAL, v4("198.51.100.2")))
    assert parse_addresses(reply) == (["198.51.100.2"], False)


def test_a_reply_cut_short_keeps_what_came_before_and_waits_for_more():
    whole = newaddr(socket.AF_INET, attr(IFA_LOCAL, v4("192.0.2.9")))
    assert parse_addresses(whole + whole[:10]) == (["192.0.2.9"], False)
    truncated_attr = newaddr(socket.AF_INET, struct.pack("=HH", 40, IFA_LOCAL) + v4("192.0.2.9"))
    assert parse_addresses(truncated_attr) == ([], False)


def test_an_address_of_the_wrong_length_or_family_is_skipped():
    reply = (newaddr(socket.AF_INET, attr(IFA_LOCAL, b"\1\2\3"))
             + newaddr(socket.AF_PACKET, attr(IFA_LOCAL, b"\1\2\3\4\5\6")))
    assert parse_addresses(reply) == ([], False)


def test_the_kernels_error_is_raised_with_its_errno():
    with pytest.raises(NetlinkError) as error:
        parse_addresses(message(NLMSG_ERROR, struct.pack("=i", -13) + b"\0" * 16))
    assert error.value.errno == 13


def test_the_request_is_an_address_dump_of_every_family():
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", dump_request(5))
    assert (length, kind, flags & 0x301, seq) == (24, 22, 0x301, 5)
    assert dump_request(5)[16] == socket.AF_UNSPEC


def test_the_live_dump_lists_what_iproute2_lists_loopback_left_out():
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    listed = {a["local"] for link in json.loads(out) for a in link.get("addr_info", ()) if "local" in a}
    assert host_addresses() == sorted(a for a in listed if not ipaddress.ip_address(a).is_loopback)
