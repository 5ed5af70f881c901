"""The labelled exec corpus through the real `ebpfguard replay`: recall and false positives."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ebpfguard.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "exec_miners.jsonl"


def test_corpus_is_large_cited_and_labelled():
    cases = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    assert len(cases) >= 100
    assert all(case["source"] and isinstance(case["expect"], list) for case in cases)
    assert sum(1 for case in cases if not case["expect"]) >= 30
    assert {case.get("split", "tune") for case in cases} == {"tune", "heldout"}


def test_miner_exec_recall_and_false_positive_rate_through_replay(tmp_path):
    cases = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    numbered = tmp_path / "corpus.jsonl"
    # Each line carries its case number so alerts map back to cases (unknown fields are kept).
    numbered.write_text("".join(json.dumps({**case, "case": index}) + "\n" for index, case in enumerate(cases)))
    result = CliRunner().invoke(main, ["replay", str(numbered)])
    assert result.exit_code == 1, result.stderr
    fired = {json.loads(line)["event"]["case"] for line in result.stdout.splitlines()
             if json.loads(line)["rule"] == "miner.exec"}
    for split in ("tune", "heldout"):
        in_split = [index for index, case in enumerate(cases) if case.get("split", "tune") == split]
        positives = [index for index in in_split if "miner.exec" in cases[index]["expect"]]
        negatives = [index for index in in_split if "miner.exec" not in cases[index]["expect"]]
        recall = sum(index in fired for index in positives) / len(positives)
        false_positive_rate = sum(index in fired for index in negatives) / len(negatives)
        missed = [cases[index]["argv"] for index in positives if index not in fired]
        flagged = [cases[index]["argv"] for index in negatives if index in fired]
        print(f"miner.exec corpus, {split} split: {len(positives)} positives, {len(negatives)} negatives, "
              f"recall {recall:.3f}, false-positive rate {false_positive_rate:.3f}, missed {missed}, "
              f"false positives {flagged}")
        assert recall >= 0.97, (split, missed)
        assert false_positive_rate <= 0.01, (split, flagged)
