"""egress.internal: sandboxes connecting to metadata, the host and private networks."""

from __future__ import annotations

from typing import Optional

import pytest
from shipped_rules import context_for

from ebpfguard.detect.egress_internal import InternalEgress

RULE = InternalEgress(context_for("egress.internal"))


def connect(daddr: str, dport: int = 443, sandbox: Optional[str] = "sandbox-a",
            rule: InternalEgress = RULE, **extra) -> list:
    event = {"kind": "connect", "daddr": daddr, "dport": dport, **extra}
    if sandbox is not None:
        event["sandbox"] = {"name": sandbox}
    return list(rule.on_event(event))


@pytest.mark.parametrize("daddr, category", [
    ("10.1.2.3", "private"), ("172.20.0.5", "private"), ("192.168.1.1", "private"),
    ("100.64.0.1", "cgnat"), ("169.254.1.1", "link_local"), ("fe80::1", "link_local"),
    ("fd12:3456::1", "ula"), ("::ffff:10.0.0.1", "private"),
])
def test_inward_ranges_are_reported_with_their_category(daddr, category):
    [finding] = connect(daddr)
    assert finding.evidence["category"] == category


@pytest.mark.parametrize("daddr", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254"])
def test_cloud_metadata_is_critical(daddr):
    [finding] = connect(daddr, 80)
    assert (finding.evidence["category"], finding.severity) == ("metadata", "critical")


@pytest.mark.parametrize("daddr", ["8.8.8.8", "2606:4700:4700::1111", "172.32.0.1",
                                   "100.128.0.1", "not-an-address"])
def test_public_addresses_are_not_reported(daddr):
    assert connect(daddr) == []


def test_loopback_alerts_only_when_the_sandbox_shares_the_hosts_netns():
    assert connect("127.0.0.1", 6443) == []
    assert connect("127.0.0.1", 6443, host_netns=False) == []
    [finding] = connect("127.0.0.1", 6443, host_netns=True)
    assert (finding.evidence["category"], finding.severity) == ("loopback", "high")
    assert connect("0.0.0.0", 22, host_netns=True)[0].evidence["category"] == "loopback"


def test_host_connections_are_ignored_unless_configured():
    assert connect("10.0.0.1", sandbox="host") == []
    rule = InternalEgress(context_for("egress.internal", include_host=True))
    assert len(connect("10.0.0.1", sandbox="host", rule=rule)) == 1


def test_missing_sandbox_counts_as_a_sandbox_as_replay_does():
    assert len(connect("10.0.0.1", sandbox=None)) == 1


def test_allowed_destinations_apply_per_sandbox_and_port():
    rule = InternalEgress(context_for("egress.internal", allowed_destinations=[
        {"sandbox": "sandbox-*", "cidrs": ["10.0.0.2/32"], "ports": [53]}]))
    assert connect("10.0.0.2", 53, rule=rule) == []
    assert len(connect("10.0.0.2", 80, rule=rule)) == 1
    assert len(connect("10.0.0.2", 53, sandbox="agent-1", rule=rule)) == 1


def test_host_addresses_list_marks_the_hosts_public_address():
    rule = InternalEgress(context_for("egress.internal", host_addresses=("203.0.113.10",)))
    assert connect("203.0.113.10", 22, rule=rule)[0].evidence["category"] == "host"


def test_addresses_the_agent_found_on_the_host_count_as_the_host():
    from ebpfguard.detect.engine import DetectionEngine, load_rules

    engine = DetectionEngine(load_rules((), {"host_addresses": ["198.51.100.7"]}))
    alerts = engine.process({"kind": "connect", "daddr": "198.51.100.7", "dport": 22,
                             "sandbox": {"name": "sandbox-1"}})
    assert [(a["rule"], a["evidence"]["category"], a["severity"]) for a in alerts] == [
        ("egress.internal", "host", "high")]
    assert DetectionEngine(load_rules()).process({"kind": "connect", "daddr": "198.51.100.7", "dport": 22,
                                                  "sandbox": {"name": "sandbox-1"}}) == []
