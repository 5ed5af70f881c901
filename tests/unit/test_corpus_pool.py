"""The DNS/SNI/connect pool corpus through the real `ebpfguard replay`: recall and false positives.

Cases run in file order through one engine, as a recording would: the connect cases rely on
the DNS answers of the cases before them.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ebpfguard.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "dns_pool.jsonl"


def load_cases() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def test_corpus_is_cited_labelled_and_covers_every_source():
    cases = load_cases()
    assert len({case["id"] for case in cases}) == len(cases)
    assert all(case["source"] and isinstance(case["expect"], list) for case in cases)
    assert sum(1 for case in cases if not case["expect"]) >= 30
    assert {case["kind"] for case in cases if case["expect"]} == {"dns", "flow", "connect"}


def test_miner_pool_recall_and_false_positive_rate_through_replay():
    cases = load_cases()
    result = CliRunner().invoke(main, ["replay", str(CORPUS)])
    assert result.exit_code == 1, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    fired = {alert["event"]["id"]: alert for alert in alerts if alert["rule"] == "miner.pool"}
    positives = [case["id"] for case in cases if "miner.pool" in case["expect"]]
    negatives = [case["id"] for case in cases if "miner.pool" not in case["expect"]]
    recall = sum(case in fired for case in positives) / len(positives)
    false_positive_rate = sum(case in fired for case in negatives) / len(negatives)
    missed = [case for case in positives if case not in fired]
    false_alarms = [case for case in negatives if case in fired]
    print(f"miner.pool corpus: {len(positives)} positives, {len(negatives)} negatives, recall {recall:.3f}, "
          f"false-positive rate {false_positive_rate:.3f}, missed {missed}, false alarms {false_alarms}")
    assert recall >= 0.95
    assert false_positive_rate <= 0.02
    assert fired["seq-connect-pos-port"]["severity"] == "high"
    assert fired["seq-connect-pos-443"]["severity"] == "medium"
    assert fired["seq-connect-pos-port"]["evidence"]["name"] == "xmr-eu1.nanopool.org"
