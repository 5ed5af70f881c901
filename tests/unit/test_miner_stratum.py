"""`miner.stratum` over flow events: reassembly per flow, one alert per flow, both directions."""

from __future__ import annotations

import base64
import itertools

import pytest
from shipped_rules import context_for

from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.miner_stratum import StratumDetector

WALLET = "48edfHu7V9Z84YzzMa6fUueoELZ9ZRXq9VetWzYGzKt52XU5xvqgzYnDK9URnRoJMk1j8nLwEVsaSWJ4fhdUyZijBGUicoD"
LOGIN = (b'{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"' + WALLET.encode()
         + b'","pass":"x","agent":"XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/11.3.0","rigid":"rig1"}}\n')
SUBSCRIBE = b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\n'
NOTIFY = b'{"id": null, "method": "mining.set_difficulty", "params": [16]}\n'
flow_ids = itertools.count(1000)


def flow(payload: bytes, direction: str = "egress", **fields) -> dict:
    return {"kind": "flow", "direction": direction, "daddr": "203.0.113.5", "dport": 8443,
            "payload_b64": base64.b64encode(payload).decode(), **fields}


def findings(detector: StratumDetector, *events: dict) -> list:
    return [finding for event in events for finding in detector.on_event(event)]


def new_detector(**params) -> StratumDetector:
    return StratumDetector(context_for("miner.stratum", **params))


def test_monero_login_split_across_two_segments_is_one_alert_with_the_wallet():
    fid = next(flow_ids)
    cut = LOGIN.index(b'"pass"') - 20  # inside the wallet: the first half alone says nothing
    [finding] = findings(new_detector(), flow(LOGIN[:cut], flow_id=fid, seq=0),
                         flow(LOGIN[cut:], flow_id=fid, seq=1))
    assert finding.evidence == {"variant": "monero", "method": "login", "login": WALLET,
                                "direction": "egress", "daddr": "203.0.113.5", "dport": 8443}


def test_a_pool_reply_alone_alerts_as_ingress():
    [finding] = findings(new_detector(), flow(NOTIFY, "ingress", flow_id=next(flow_ids), seq=0))
    assert finding.evidence["direction"] == "ingress"
    assert finding.evidence["method"] == "mining.set_difficulty"
    assert "from 203.0.113.5 port 8443" in finding.summary


def test_both_directions_and_later_segments_of_one_flow_give_one_alert():
    fid = next(flow_ids)
    found = findings(new_detector(), flow(SUBSCRIBE, flow_id=fid, seq=0),
                     flow(NOTIFY, "ingress", flow_id=fid, seq=0),
                     flow(b'{"id": 2, "method": "mining.authorize", "params": ["u", "p"]}\n', flow_id=fid, seq=1))
    assert [f.evidence["method"] for f in found] == ["mining.subscribe"]


def test_two_flows_give_two_alerts():
    detector = new_detector()
    assert len(findings(detector, flow(SUBSCRIBE, flow_id=next(flow_ids), seq=0),
                        flow(SUBSCRIBE, flow_id=next(flow_ids), seq=0))) == 2


def test_http_flow_to_an_ethereum_node_is_ignored_even_its_newline_framed_getwork_body():
    fid = next(flow_ids)
    headers = b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8545\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n"
    body = b'{"jsonrpc":"2.0","method":"eth_getWork","params":[],"id":1}\n'
    assert findings(new_detector(), flow(headers, flow_id=fid, seq=0), flow(body, flow_id=fid, seq=1)) == []


def test_segments_are_not_glued_across_a_lost_segment():
    fid = next(flow_ids)
    first, second = SUBSCRIBE[:30], SUBSCRIBE[30:]
    # seq 1 was lost: seq 2's leading bytes cannot complete seq 0's line.
    assert findings(new_detector(), flow(first.replace(b"mining.subscribe", b"mining.subscrXbe"), flow_id=fid, seq=0),
                    flow(second, flow_id=fid, seq=2)) == []
    later = findings(new_detector(), flow(b'{"id": 1, "me', flow_id=fid, seq=0),
                     flow(b'thod": "x"}\n' + SUBSCRIBE, flow_id=fid, seq=2))
    assert [f.evidence["method"] for f in later] == ["mining.subscribe"]


def test_a_payload_cut_at_the_capture_size_is_not_continued_by_the_next_segment():
    fid = next(flow_ids)
    padded = b'{"id": 1, "method": "mining.subscrXbe", "params": ["' + b"a" * 600
    continuation = b'"]}\n'
    assert findings(new_detector(capture_bytes=64), flow(padded[:64], flow_id=fid, seq=0),
                    flow(continuation, flow_id=fid, seq=1)) == []


def test_events_without_flow_id_are_each_a_flow_of_their_own():
    detector = new_detector()
    half = len(SUBSCRIBE) // 2
    assert findings(detector, flow(SUBSCRIBE[:10]), flow(SUBSCRIBE[10:])) == []
    assert len(findings(detector, flow(SUBSCRIBE), flow(SUBSCRIBE))) == 2
    assert findings(detector, flow(SUBSCRIBE[half:], seq=1)) == []


def test_flow_state_is_bounded_least_recently_seen_forgotten():
    detector = new_detector(max_flows=2)
    one, two, three = next(flow_ids), next(flow_ids), next(flow_ids)
    starts = [flow(SUBSCRIBE[:20], flow_id=fid, seq=0) for fid in (one, two, three)]
    ends = [flow(SUBSCRIBE[20:], flow_id=fid, seq=1) for fid in (three, two, one)]
    found = findings(detector, *starts, *ends)
    assert len(found) == 2  # flow one's first half was evicted by flow three


def test_not_base64_payload_is_ignored():
    assert findings(new_detector(), {"kind": "flow", "direction": "egress", "dport": 1, "payload_b64": "%%%"}) == []


@pytest.mark.parametrize("params", [{"max_flows": 0}, {"capture_bytes": "512"}, {"max_carry_bytes": True}])
def test_bad_params_are_rejected(params):
    with pytest.raises(ValueError):
        new_detector(**params)


def test_engine_raises_a_high_t1496_alert_with_the_event():
    engine = DetectionEngine(load_rules())
    event = flow(LOGIN, flow_id=next(flow_ids), seq=0, process={"pid": 4242}, sandbox={"name": "sandbox-a"})
    [alert] = engine.process(event)
    assert (alert["rule"], alert["severity"]) == ("miner.stratum", "high")
    assert "T1496" in alert["tags"]
    assert alert["sandbox"]["name"] == "sandbox-a" and alert["event"]["flow_id"] == event["flow_id"]


def test_nicehash_subscribe_split_before_its_protocol_waits_for_the_rest():
    fid = next(flow_ids)
    subscribe = b'{"id": 1, "method": "mining.subscribe", "params": ["EthereumMiner/1.0.0", "EthereumStratum/1.0.0"]}\n'
    detector = new_detector()
    assert findings(detector, flow(subscribe[:60], flow_id=fid, seq=0)) == []
    [finding] = findings(detector, flow(subscribe[60:], flow_id=fid, seq=1))
    assert finding.evidence["variant"] == "nicehash"


def test_an_unfinished_message_in_the_last_segment_sent_is_judged_as_it_is():
    fid = next(flow_ids)
    detector = new_detector(segments_per_direction=2)
    assert findings(detector, flow(b'{"id": 7, "method": "ping"}\n', flow_id=fid, seq=0)) == []
    [finding] = findings(detector, flow(SUBSCRIBE[:40], flow_id=fid, seq=1))
    assert finding.evidence["method"] == "mining.subscribe"
