"""DNS message parser: real captures (wire_captures.py), malformed messages, and a bounded fuzz test."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire_captures import (
    DIG_A_QUERY, DIG_MIXED_CASE_QUERY, DIG_REFUSED_RESPONSE, DIG_TCP_QUERY, DIG_TCP_RESPONSE, DIG_TXT_RESPONSE,
    DIG_TYPE65534_QUERY, GLIBC_A_QUERY, GLIBC_A_RESPONSE, GLIBC_AAAA_RESPONSE, REAL_MESSAGES,
)

from ebpfguard.enrich.wire.dns import (
    MAX_POINTERS, Answer, DnsParseError, Question, parse_dns_message, parse_dns_tcp, read_name,
)

POOL = Question("xmr-eu1.nanopool.org", "A")


def header(qdcount: int = 1, ancount: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qdcount, ancount, 0, 0)


def test_glibc_query_gives_the_qname_and_type():
    message = parse_dns_message(GLIBC_A_QUERY)
    assert (message.id, message.is_response, message.rcode) == (0x8269, False, 0)
    assert message.questions == [POOL]
    assert message.answers == []


def test_response_follows_compression_pointers_in_owner_names_and_cname_data():
    message = parse_dns_message(GLIBC_A_RESPONSE)
    assert message.is_response and message.id == 0x8269
    assert message.questions == [POOL]
    assert message.answers == [
        Answer("xmr-eu1.nanopool.org", "CNAME", 300, "eu1.nanopool-lb.example"),
        Answer("eu1.nanopool-lb.example", "A", 300, "192.0.2.10"),
    ]


def test_aaaa_answer_value_is_the_ipv6_address_as_text():
    assert parse_dns_message(GLIBC_AAAA_RESPONSE).answers[-1] == Answer(
        "eu1.nanopool-lb.example", "AAAA", 300, "2001:db8::10")


def test_edns_query_is_read_without_its_additional_section():
    assert parse_dns_message(DIG_A_QUERY).questions == [POOL]


def test_txt_answer_has_no_value_and_unknown_types_are_written_rfc3597_style():
    assert parse_dns_message(DIG_TXT_RESPONSE).answers == [Answer("pool.supportxmr.com", "TXT", 300, None)]
    assert parse_dns_message(DIG_TYPE65534_QUERY).questions == [Question("pool.supportxmr.com", "TYPE65534")]


def test_refused_response_carries_its_rcode_and_no_answers():
    message = parse_dns_message(DIG_REFUSED_RESPONSE)
    assert (message.is_response, message.rcode, message.answers) == (True, 5, [])


def test_names_are_lower_cased():
    assert parse_dns_message(DIG_MIXED_CASE_QUERY).questions == [POOL]


def test_tcp_messages_are_read_after_their_length_prefix():
    assert parse_dns_tcp(DIG_TCP_QUERY).questions == [Question("xmr-eu1.nanopool.org", "AAAA")]
    assert parse_dns_tcp(DIG_TCP_RESPONSE).answers[-1].value == "2001:db8::10"


def test_tcp_length_prefix_longer_than_the_bytes_is_an_error():
    with pytest.raises(DnsParseError, match="length prefix"):
        parse_dns_tcp(DIG_TCP_QUERY[:-1])


def test_root_name_is_a_dot_and_odd_bytes_are_escaped_decimal():
    assert read_name(b"\x00", 0) == (".", 1)
    assert read_name(b"\x04a.\\\x07\x03COM\x00", 0) == ("a\\046\\092\\007.com", 10)


@pytest.mark.parametrize("cut", range(len(GLIBC_A_RESPONSE)))
def test_every_truncation_of_a_response_is_a_parse_error(cut):
    with pytest.raises(DnsParseError):
        parse_dns_message(GLIBC_A_RESPONSE[:cut])


def test_compression_pointer_to_itself_is_an_error():
    with pytest.raises(DnsParseError, match="does not point back"):
        parse_dns_message(header() + b"\xc0\x0c\x00\x01\x00\x01")


def test_compression_loop_through_labels_is_an_error():
    # A label, then a pointer back to that label: each hop is backward yet it never ends.
    with pytest.raises(DnsParseError, match="does not point back"):
        parse_dns_message(header() + b"\x01a\xc0\x0c\x00\x01\x00\x01")


@pytest.mark.parametrize("pointer", [b"\xc0\x20", b"\xff\xff", b"\xc0\x00"], ids=["forward", "out-of-range", "header"])
def test_pointers_anywhere_but_back_to_an_earlier_name_are_errors(pointer):
    with pytest.raises(DnsParseError, match="does not point back"):
        parse_dns_message(header() + pointer + b"\x00\x01\x00\x01" + b"\x00" * 30)


def test_chains_of_pointers_to_pointers_are_capped():
    # Offsets 12, 14, ...: each a pointer to the one before; the first ends the name.
    chain = b"\x00\x00" + b"".join(struct.pack("!H", 0xC000 | (12 + 2 * i)) for i in range(MAX_POINTERS + 1))
    with pytest.raises(DnsParseError, match="compression pointers"):
        read_name(header() + chain, len(header() + chain) - 2)


def test_truncated_label_is_an_error():
    with pytest.raises(DnsParseError, match="cut short"):
        parse_dns_message(header() + b"\x10short")


def test_name_over_255_bytes_is_an_error():
    name = b"\x3f" + b"a" * 63
    with pytest.raises(DnsParseError, match="longer than 255"):
        parse_dns_message(header() + name * 4 + b"\x00\x00\x01\x00\x01")


def test_label_lengths_over_63_are_errors():
    for first in (0x40, 0x80, 0x7F):
        with pytest.raises(DnsParseError, match="over 63"):
            parse_dns_message(header() + bytes([first]) + b"a" * 70 + b"\x00\x00\x01\x00\x01")


def test_too_many_records_is_an_error():
    with pytest.raises(DnsParseError, match="questions"):
        parse_dns_message(header(qdcount=5))
    with pytest.raises(DnsParseError, match="answers"):
        parse_dns_message(header(ancount=1000))


def test_address_records_of_the_wrong_size_are_errors():
    answer = b"\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x05" + b"\x01" * 5
    with pytest.raises(DnsParseError, match="A data of 5 bytes"):
        parse_dns_message(header(qdcount=0, ancount=1) + answer)


def test_cname_data_must_be_exactly_one_name():
    answer = b"\x00\x00\x05\x00\x01\x00\x00\x00\x3c\x00\x04" + b"\x01a\x00\xff"
    with pytest.raises(DnsParseError, match="exactly one name"):
        parse_dns_message(header(qdcount=0, ancount=1) + answer)


def test_ttl_with_the_top_bit_set_reads_as_zero():
    answer = b"\x00\x00\x01\x00\x01\xff\xff\xff\xff\x00\x04\xc0\x00\x02\x01"
    assert parse_dns_message(header(qdcount=0, ancount=1) + answer).answers[0].ttl == 0


def _parses_or_rejects(data: bytes) -> None:
    try:
        message = parse_dns_message(data)
    except DnsParseError:
        return
    for name, _ in message.questions:
        assert name.isascii() and name.isprintable()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_raise_only_dns_parse_errors(data):
    _parses_or_rejects(data)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(REAL_MESSAGES), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=6),
       st.integers(0, 200))
def test_fuzz_mutated_real_messages_raise_only_dns_parse_errors(message, flips, cut):
    data = bytearray(message)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    _parses_or_rejects(bytes(data[:len(data) - cut % (len(data) + 1)]))
