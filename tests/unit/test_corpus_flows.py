"""The shared flow corpus through the real `ebpfguard replay`: `miner.stratum` recall and false positives.

A case is an `id`: one or more flow events (the segments of one flow, both directions) that
share it. Recall counts positive cases with exactly one `miner.stratum` alert; the false-positive
rate counts negative cases (`expect: []`) with any. Variant accuracy is over the positives.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from pathlib import Path

from click.testing import CliRunner

from ebpfguard.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "flows.jsonl"
RULE = "miner.stratum"


def load() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def by_case(events: list[dict]) -> dict[str, list[dict]]:
    cases = defaultdict(list)
    for event in events:
        cases[event["id"]].append(event)
    return cases


def test_corpus_cases_are_cited_consistent_and_readable():
    events = load()
    cases = by_case(events)
    assert sum(1 for case in cases.values() if RULE in case[0]["expect"]) >= 50
    assert sum(1 for case in cases.values() if not case[0]["expect"]) >= 40
    for case_id, case in cases.items():
        assert all(event["source"] and event["expect"] == case[0]["expect"] for event in case), case_id
        assert len({event.get("flow_id") for event in case}) == 1, case_id
    assert {event.get("split", "tune") for event in events} == {"tune", "heldout"}
    for event in events:
        # payload_text is the payload for reading; the agent and replay only use payload_b64.
        assert base64.b64decode(event["payload_b64"]) == event["payload_text"].encode()
    flow_ids = [event["flow_id"] for event in events if "flow_id" in event]
    assert len(set(flow_ids)) == len({event["id"] for event in events if "flow_id" in event})


def test_miner_stratum_recall_and_false_positive_rate_through_replay():
    events = load()
    cases = by_case(events)
    result = CliRunner().invoke(main, ["replay", str(CORPUS)])
    assert result.exit_code == 1, result.stderr
    assert result.stderr == ""
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    fired = Counter(alert["event"]["id"] for alert in alerts if alert["rule"] == RULE)
    variants = {alert["event"]["id"]: alert["evidence"]["variant"] for alert in alerts if alert["rule"] == RULE}
    for split in ("tune", "heldout"):
        in_split = {case_id: case for case_id, case in cases.items() if case[0].get("split", "tune") == split}
        positives = [case_id for case_id, case in in_split.items() if RULE in case[0]["expect"]]
        negatives = [case_id for case_id, case in in_split.items() if RULE not in case[0]["expect"]]
        recall = sum(fired[case_id] == 1 for case_id in positives) / len(positives)
        false_positive_rate = sum(fired[case_id] > 0 for case_id in negatives) / len(negatives)
        right_variant = sum(variants.get(case_id) == cases[case_id][0]["variant"] for case_id in positives) / len(positives)
        missed = [case_id for case_id in positives if fired[case_id] != 1]
        false_positives = [case_id for case_id in negatives if fired[case_id]]
        wrong_variant = [case_id for case_id in positives if case_id in variants
                         and variants[case_id] != cases[case_id][0]["variant"]]
        print(f"{RULE} flow corpus, {split} split: {len(positives)} positive and {len(negatives)} "
              f"negative cases; recall {recall:.3f}, false-positive rate {false_positive_rate:.3f}, "
              f"variant right {right_variant:.3f}; missed {missed}, false positives {false_positives}, "
              f"wrong variant {wrong_variant}")
        assert recall >= 0.97, (split, missed)
        assert false_positive_rate <= 0.01, (split, false_positives)
        assert right_variant >= 0.9, (split, wrong_variant)
