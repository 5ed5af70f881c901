"""The miner.tuning corpus through the real `ebpfguard replay`: recall and false positives per split."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ebpfguard.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "miner_tuning.jsonl"
RULE = "miner.tuning"


def test_corpus_is_cited_labelled_and_split():
    cases = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    assert len({case["id"] for case in cases}) == len(cases)
    assert all(case["source"].startswith("http") for case in cases if case["expect"])
    assert {case["split"] for case in cases} == {"tune", "heldout"}
    assert sum(1 for case in cases if not case["expect"]) >= 10


def test_miner_tuning_recall_and_false_positive_rate_per_split():
    cases = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    result = CliRunner().invoke(main, ["replay", str(CORPUS)])
    assert result.exit_code == 1, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    fired = {alert["event"]["id"] for alert in alerts if alert["rule"] == RULE}
    # No other rule may fire on these cases either: the hard negatives are every rule's.
    others = {alert["event"]["id"] for alert in alerts if alert["rule"] != RULE}
    for split in ("tune", "heldout"):
        positives = [c["id"] for c in cases if c["split"] == split and RULE in c["expect"]]
        negatives = [c["id"] for c in cases if c["split"] == split and not c["expect"]]
        recall = sum(case_id in fired for case_id in positives) / len(positives)
        false_positives = [case_id for case_id in negatives if case_id in fired | others]
        print(f"{RULE} corpus, {split} split: {len(positives)} positives, {len(negatives)} negatives, "
              f"recall {recall:.3f}, false positives {false_positives}, "
              f"missed {[case_id for case_id in positives if case_id not in fired]}")
        assert recall >= 0.97, split
        assert len(false_positives) / len(negatives) <= 0.01, (split, false_positives)
