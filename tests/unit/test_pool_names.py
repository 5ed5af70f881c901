"""The pool domain list's suffix match and the table of names seen in DNS answers."""

from __future__ import annotations

import pytest
from wire_captures import GLIBC_A_RESPONSE, GLIBC_AAAA_RESPONSE

from ebpfguard.detect.pool_names import DomainList, ObservedNames, answers_from_records
from ebpfguard.enrich.wire.dns import Answer, parse_dns_message

S = 1_000_000_000
POOLS = DomainList(["nanopool.org", "pool.binance.com", "*.f2pool.com", "Supportxmr.COM."])


@pytest.mark.parametrize("name,matched", [
    ("nanopool.org", "nanopool.org"),
    ("xmr-eu1.nanopool.org", "nanopool.org"),
    ("XMR-EU1.NanoPool.org.", "nanopool.org"),
    ("eth.f2pool.com", "f2pool.com"),
    ("pool.supportxmr.com", "supportxmr.com"),
    ("pool.binance.com", "pool.binance.com"),
    ("evilnanopool.org", None),
    ("nanopool.org.evil.com", None),
    ("binance.com", None),
    ("www.binance.com", None),
    ("org", None),
    ("", None),
])
def test_domains_match_as_suffixes_on_label_boundaries(name, matched):
    assert POOLS.match(name) == matched


def test_addresses_get_every_name_along_the_cname_chain():
    names = ObservedNames()
    names.learn(parse_dns_message(GLIBC_A_RESPONSE).answers, now_ns=0, scope="sandbox-a")
    names.learn(parse_dns_message(GLIBC_AAAA_RESPONSE).answers, now_ns=0, scope="sandbox-a")
    expected = ["eu1.nanopool-lb.example", "xmr-eu1.nanopool.org"]
    assert names.names_for("192.0.2.10", now_ns=1, scope="sandbox-a") == expected
    assert names.names_for("2001:db8::10", now_ns=1, scope="sandbox-a") == expected


def test_ipv4_mapped_ipv6_connects_find_the_ipv4_answer():
    names = ObservedNames()
    names.learn([Answer("pool.example", "A", 60, "192.0.2.7")])
    assert names.names_for("::ffff:192.0.2.7") == ["pool.example"]


def test_names_are_kept_per_scope():
    names = ObservedNames()
    names.learn([Answer("pool.example", "A", 60, "192.0.2.7")], scope="sandbox-a")
    assert names.names_for("192.0.2.7", scope="sandbox-b") == []


def test_entries_expire_after_the_ttl_raised_to_the_minimum():
    names = ObservedNames(min_ttl_s=300, max_ttl_s=3600)
    names.learn([Answer("short.example", "A", 0, "192.0.2.1"), Answer("long.example", "A", 10**6, "192.0.2.2")],
                now_ns=0)
    assert names.names_for("192.0.2.1", now_ns=299 * S) == ["short.example"]
    assert names.names_for("192.0.2.1", now_ns=300 * S) == []
    assert names.names_for("192.0.2.2", now_ns=3599 * S) == ["long.example"]
    assert names.names_for("192.0.2.2", now_ns=3600 * S) == []


def test_table_is_bounded_least_recently_used_first_out():
    names = ObservedNames(max_addresses=2, max_names_per_address=2)
    for i in range(3):
        names.learn([Answer(f"n{i}.example", "A", 60, "192.0.2.1")])
    names.learn([Answer("a.example", "A", 60, "192.0.2.2")])
    names.names_for("192.0.2.1")  # used: 192.0.2.2 is now the oldest
    names.learn([Answer("b.example", "A", 60, "192.0.2.3")])
    assert len(names) == 2
    assert names.names_for("192.0.2.1") == ["n1.example", "n2.example"]
    assert names.names_for("192.0.2.2") == []


def test_cname_cycles_end():
    names = ObservedNames()
    names.learn([Answer("a.example", "CNAME", 60, "b.example"), Answer("b.example", "CNAME", 60, "a.example"),
                 Answer("b.example", "A", 60, "192.0.2.9")])
    assert names.names_for("192.0.2.9") == ["b.example", "a.example"]


def test_answers_from_event_records_skip_malformed_entries():
    records = [{"name": "a.example", "type": "a", "ttl": 30, "value": "192.0.2.1"},
               {"name": "b.example", "type": "CNAME", "value": "c.example"},
               {"name": 5, "type": "A"}, "junk", {"name": "d.example", "type": "A", "ttl": -1, "value": 7}]
    assert answers_from_records(records) == [Answer("a.example", "A", 30, "192.0.2.1"),
                                             Answer("b.example", "CNAME", 0, "c.example")]
    assert answers_from_records("junk") == []
