"""DNS messages (RFC 1035 section 4) as the agent sees them on port 53: questions and answers.

Only the header, the question section and the answer section are read. The authority and
additional sections name nothing the process asked for, and a capture bound cuts them first
(the EDNS OPT record sits at the end), so a message is usable once its answers are in.

Compression pointers must point strictly before the start of every label sequence read so far
for the name: every real compressor points back at a name it already wrote, and the rule makes
loops impossible, so decoding a name touches each byte at most once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Union

HEADER_BYTES = 12
MAX_NAME_BYTES = 255  # wire form, length octets included (RFC 1035 2.3.4)
# Compressors point a name at one earlier name, which may point at one more: chains of a
# few. The cap keeps a chain of pointers to pointers from costing a step per two bytes.
MAX_POINTERS = 16
# A query carries one question; resolvers answer with a few dozen records at most. More is
# not DNS we need to read, and the cap bounds the work an adversarial message can ask for.
MAX_QUESTIONS = 4
MAX_ANSWERS = 128
CLASS_IN = 1

TYPE_NAMES = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 13: "HINFO", 15: "MX", 16: "TXT",
    28: "AAAA", 33: "SRV", 35: "NAPTR", 39: "DNAME", 41: "OPT", 43: "DS", 46: "RRSIG",
    47: "NSEC", 48: "DNSKEY", 50: "NSEC3", 52: "TLSA", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    251: "IXFR", 252: "AXFR", 255: "ANY", 257: "CAA",
}
# Record types whose data is one domain name, which may be compressed (RFC 3597 section 4).
NAME_TYPES = frozenset({"CNAME", "NS", "PTR", "DNAME"})


class DnsParseError(ValueError):
    """The bytes are not a DNS message this parser accepts; the message says why."""


class Question(NamedTuple):
    name: str
    type: str


class Answer(NamedTuple):
    name: str
    type: str
    ttl: int
    # A/AAAA: the address; CNAME, NS, PTR, DNAME: the name; other types: None.
    value: Optional[str]


@dataclass(frozen=True)
class DnsMessage:
    """What a DNS message says about names: who asked for what, and what came back."""

    id: int
    is_response: bool
    rcode: int
    questions: list[Question] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)


def type_name(code: int) -> str:
    """The text of a record type: `A`, `TXT`, or `TYPE65534` for one without a name (RFC 3597)."""
    return TYPE_NAMES.get(code) or f"TYPE{code}"


def parse_dns_message(data: bytes) -> DnsMessage:
    """The header, questions and answers of one DNS message; DnsParseError if malformed."""
    if len(data) < HEADER_BYTES:
        raise DnsParseError(f"shorter than the {HEADER_BYTES}-byte header")
    message_id, flags, qdcount, ancount = (int.from_bytes(data[i:i + 2], "big") for i in (0, 2, 4, 6))
    if qdcount > MAX_QUESTIONS:
        raise DnsParseError(f"{qdcount} questions (at most {MAX_QUESTIONS})")
    if ancount > MAX_ANSWERS:
        raise DnsParseError(f"{ancount} answers (at most {MAX_ANSWERS})")
    offset = HEADER_BYTES
    questions = []
    for _ in range(qdcount):
        name, offset = read_name(data, offset)
        qtype = _u16(data, offset)
        _u16(data, offset + 2)  # the class must be there too
        questions.append(Question(name, type_name(qtype)))
        offset += 4
    answers = []
    for _ in range(ancount):
        answer, offset = _read_answer(data, offset)
        answers.append(answer)
    return DnsMessage(id=message_id, is_response=bool(flags & 0x8000), rcode=flags & 0xF,
                      questions=questions, answers=answers)


def parse_dns_tcp(data: bytes) -> DnsMessage:
    """The first message of a DNS-over-TCP stream, which prefixes each with its 2-byte length."""
    length = _u16(data, 0)
    if len(data) < 2 + length:
        raise DnsParseError(f"the length prefix says {length} bytes, {len(data) - 2} follow")
    return parse_dns_message(data[2:2 + length])


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` in presentation form and the offset just past it in the record.

    Lower case, no trailing dot (the root is `.`). Bytes outside printable ASCII, and `.` and
    `\\` themselves, are written `\\DDD` (RFC 1035 5.1): a label holding a dot cannot pose as
    two, and no control byte reaches a log or a terminal.
    """
    labels: list[str] = []
    wire_length = 1  # the root's zero octet
    end: Optional[int] = None  # where the name ends in the record: after its first pointer
    lowest = offset  # pointers must go strictly below every sequence start seen
    pointers = 0
    while True:
        length = _u8(data, offset)
        kind = length & 0xC0
        if kind == 0xC0:
            target = ((length & 0x3F) << 8) | _u8(data, offset + 1)
            if not HEADER_BYTES <= target < lowest:
                raise DnsParseError(f"compression pointer at {offset} to {target} does not point back to a name")
            pointers += 1
            if pointers > MAX_POINTERS:
                raise DnsParseError(f"more than {MAX_POINTERS} compression pointers in a name")
            if end is None:
                end = offset + 2
            offset = lowest = target
            continue
        if kind:  # 0x40: extended labels, deprecated by RFC 6891; 0x80: reserved
            raise DnsParseError(f"label length byte 0x{length:02x} at {offset} is over 63")
        if length == 0:
            break
        label = data[offset + 1:offset + 1 + length]
        if len(label) < length:
            raise DnsParseError(f"label at {offset} is cut short")
        wire_length += length + 1
        if wire_length > MAX_NAME_BYTES:
            raise DnsParseError(f"name longer than {MAX_NAME_BYTES} bytes")
        labels.append(escape_label(label))
        offset += 1 + length
    return (".".join(labels) or "."), (offset + 1 if end is None else end)


def escape_label(label: bytes) -> str:
    """One label as text: ASCII letters lowered; other bytes as in `read_name`."""
    return "".join(_ESCAPED[byte] for byte in label)


def _escaped(byte: int) -> str:
    printable = 0x21 <= byte <= 0x7E and byte not in b".\\"
    return chr(byte).lower() if printable else f"\\{byte:03d}"


_ESCAPED = [_escaped(byte) for byte in range(256)]


def _read_answer(data: bytes, offset: int) -> tuple[Answer, int]:
    name, offset = read_name(data, offset)
    rtype = type_name(_u16(data, offset))
    rclass = _u16(data, offset + 2)
    ttl = int.from_bytes(_bytes(data, offset + 4, 4), "big")
    rdlength = _u16(data, offset + 8)
    start = offset + 10
    rdata = _bytes(data, start, rdlength)
    value: Optional[str] = None
    if rtype in ("A", "AAAA") and rclass == CLASS_IN:
        value = _address(rdata, rtype)
    elif rtype in NAME_TYPES:
        value, name_end = read_name(data, start)
        if name_end != start + rdlength:
            raise DnsParseError(f"{rtype} data at {start} is not exactly one name")
    # A TTL with the top bit set is read as 0 (RFC 2181 section 8).
    return Answer(name, rtype, ttl if ttl < 1 << 31 else 0, value), start + rdlength


def _address(rdata: bytes, rtype: str) -> str:
    size = 4 if rtype == "A" else 16
    if len(rdata) != size:
        raise DnsParseError(f"{rtype} data of {len(rdata)} bytes")
    address: Union[ipaddress.IPv4Address, ipaddress.IPv6Address] = (
        ipaddress.IPv4Address(rdata) if size == 4 else ipaddress.IPv6Address(rdata))
    return str(address)


def _bytes(data: bytes, offset: int, count: int) -> bytes:
    chunk = data[offset:offset + count]
    if len(chunk) < count:
        raise DnsParseError(f"message ends at {len(data)}, inside a field at {offset}")
    return chunk


def _u8(data: bytes, offset: int) -> int:
    return _bytes(data, offset, 1)[0]


def _u16(data: bytes, offset: int) -> int:
    return int.from_bytes(_bytes(data, offset, 2), "big")
