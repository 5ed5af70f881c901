"""miner.pool: pool names from DNS, TLS SNI and connects, with the shipped rule file."""

from __future__ import annotations

import base64

import pytest
from rules_helpers import write
from wire_captures import GLIBC_A_RESPONSE, OPENSSL_TLS12_HELLO

from ebpfguard.detect.engine import DetectionEngine
from ebpfguard.detect.miner_pool import MinerPool
from ebpfguard.detect.registry import RuleContext
from ebpfguard.detect.rulefile import load_rules
from ebpfguard.enrich.wire.dns import parse_dns_message


def detector(**params) -> MinerPool:
    """The detector as the engine builds it from the shipped rules (lists merged)."""
    rule = load_rules().get("miner.pool")
    return MinerPool(RuleContext(rule_id="miner.pool", params={**rule.params, **params}))


def dns(query: str, answers=None, **extra) -> dict:
    event = {"kind": "dns", "query": query, "qtype": "A", "sandbox": {"name": "sandbox-a"}, **extra}
    if answers is not None:
        event["answers"] = answers
    return event


def connect(daddr: str, dport: int, **extra) -> dict:
    return {"kind": "connect", "daddr": daddr, "dport": dport, "sandbox": {"name": "sandbox-a"}, **extra}


def flow(dport: int, **extra) -> dict:
    return {"kind": "flow", "direction": "egress", "daddr": "192.0.2.10", "dport": dport,
            "sandbox": {"name": "sandbox-a"}, **extra}


OBSERVED_RESPONSE = [answer._asdict() for answer in parse_dns_message(GLIBC_A_RESPONSE).answers]


def test_shipped_list_is_large_and_every_entry_is_a_domain():
    rule = load_rules().get("miner.pool")
    own = set(load_rules().lists["pool_domains"])
    assert len(own) >= 60
    assert all("." in domain and domain == domain.lower() for domain in rule.params["pool_domains"])
    assert {3333, 4444, 5555, 7777, 14444, 45700} <= {int(port) for port in rule.params["pool_ports"]}


def test_dns_query_for_a_pool_alerts_with_the_list_entry():
    [finding] = detector().on_event(dns("xmr-eu1.nanopool.org"))
    assert finding.evidence == {"matched": "nanopool.org", "name": "xmr-eu1.nanopool.org", "source": "dns",
                                "port_hint": None, "daddr": None}
    assert finding.severity is None  # the rule's: medium


@pytest.mark.parametrize("name", ["nanopool.org.evil.com", "evilnanopool.org", "minecraft.net", "pool.ntp.org",
                                  "github.com", "binance.com", ""])
def test_dns_query_for_other_names_is_silent(name):
    assert list(detector().on_event(dns(name))) == []


def test_fully_qualified_and_upper_case_queries_match():
    assert len(list(detector().on_event(dns("XMR-EU1.nanopool.ORG.")))) == 1


def test_a_cname_into_a_pool_alerts_on_the_pool_name():
    answers = [{"name": "updates.example", "type": "CNAME", "ttl": 60, "value": "gulf.moneroocean.stream"}]
    [finding] = detector().on_event(dns("updates.example", answers))
    assert (finding.evidence["name"], finding.evidence["matched"]) == ("gulf.moneroocean.stream", "moneroocean.stream")


def test_tls_server_name_alerts_and_a_pool_port_raises_it_to_high():
    [on_443] = detector().on_event(flow(443, sni="pool.supportxmr.com"))
    assert on_443.evidence["source"] == "sni" and on_443.evidence["port_hint"] is None and on_443.severity is None
    [on_3333] = detector().on_event(flow(3333, sni="pool.supportxmr.com"))
    assert on_3333.evidence["port_hint"] == 3333 and on_3333.severity == "high"


def test_flow_without_sni_field_reads_the_client_hello_in_its_payload():
    payload = base64.b64encode(OPENSSL_TLS12_HELLO).decode()
    [finding] = detector().on_event(flow(10128, payload_b64=payload))
    assert finding.evidence["name"] == "gulf.moneroocean.stream" and finding.severity == "high"


def test_flows_without_a_pool_name_are_silent():
    plain = base64.b64encode(b'{"id":1,"method":"login"}\n').decode()
    assert list(detector().on_event(flow(3333, payload_b64=plain))) == []
    assert list(detector().on_event(flow(443, payload_b64="not base64!"))) == []
    assert list(detector().on_event(flow(443, sni="github.com"))) == []


def test_pool_port_alone_never_alerts():
    assert list(detector().on_event(connect("192.0.2.10", 3333))) == []


def test_connect_to_an_address_a_dns_answer_gave_a_pool_name_alerts_high_on_a_pool_port():
    pool = detector()
    list(pool.on_event(dns("xmr-eu1.nanopool.org", OBSERVED_RESPONSE)))
    [finding] = pool.on_event(connect("192.0.2.10", 14444))
    assert finding.evidence == {"matched": "nanopool.org", "name": "xmr-eu1.nanopool.org", "source": "connect",
                                "port_hint": 14444, "daddr": "192.0.2.10"}
    assert finding.severity == "high"


def test_names_learned_in_one_sandbox_say_nothing_about_another():
    pool = detector()
    list(pool.on_event(dns("xmr-eu1.nanopool.org", OBSERVED_RESPONSE)))
    assert list(pool.on_event(connect("192.0.2.10", 14444, sandbox={"name": "sandbox-b"}))) == []


def test_learned_names_expire():
    pool = detector(min_ttl_s=300)
    list(pool.on_event(dns("xmr-eu1.nanopool.org", OBSERVED_RESPONSE, time="2025-01-01T00:00:00Z")))
    assert list(pool.on_event(connect("192.0.2.10", 14444, time="2025-01-01T00:04:59Z")))
    assert not list(pool.on_event(connect("192.0.2.10", 14444, time="2025-01-01T00:05:01Z")))


def test_one_alert_per_name_per_process_and_one_more_when_a_pool_port_adds_to_it():
    pool = detector()
    process = {"process": {"pid": 42}}
    assert len(list(pool.on_event(dns("xmr-eu1.nanopool.org", OBSERVED_RESPONSE, **process)))) == 1
    assert list(pool.on_event(dns("xmr-eu1.nanopool.org", **process))) == []
    assert list(pool.on_event(connect("192.0.2.10", 443, **process))) == []
    assert len(list(pool.on_event(connect("192.0.2.10", 14444, **process)))) == 1
    assert list(pool.on_event(connect("192.0.2.10", 3333, **process))) == []
    assert len(list(pool.on_event(dns("xmr-eu1.nanopool.org", process={"pid": 43})))) == 1


def test_events_without_a_pid_are_not_deduplicated():
    pool = detector()
    assert len(list(pool.on_event(dns("xmr-eu1.nanopool.org")))) == 1
    assert len(list(pool.on_event(dns("xmr-eu1.nanopool.org")))) == 1


def test_users_extend_either_pool_list_from_a_rules_file(tmp_path):
    extra = write(tmp_path, "pools.yaml", """\
        lists:
          pool_domains: [pool.corp-miners.example]
          mining_pool_domains: [Stratum.Other.Example.]
    """)
    engine = DetectionEngine(load_rules([extra]))
    for name in ("eu.pool.corp-miners.example", "stratum.other.example"):
        [alert] = engine.process({**dns(name), "process": {"pid": 1}})
        assert alert["rule"] == "miner.pool" and alert["severity"] == "medium"


def test_engine_alert_carries_rule_severity_and_tags():
    engine = DetectionEngine(load_rules())
    [alert] = engine.process({**flow(5555, sni="rx.unmineable.com"), "process": {"pid": 7}})
    assert (alert["rule"], alert["severity"], alert["evidence"]["matched"]) == ("miner.pool", "high", "unmineable.com")
    assert "T1496" in alert["tags"]


def test_an_empty_domain_list_is_refused():
    with pytest.raises(ValueError):
        detector(pool_domains=())
