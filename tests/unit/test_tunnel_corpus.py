"""The tunnel corpus: recall >= 0.97, false-positive rate <= 0.01 on each split, three ways in.

Through the detectors directly, through the engine with the shipped rules files, and through
`ebpfguard replay` (design.md) as a user runs it. Recall counts expected (case, rule) pairs
that fired; the false-positive rate counts hard negatives (`expect: []`) on which any of the
tunnel and egress rules fired. Rules of other families are not scored here. Cases marked
`split: heldout` were kept out of tuning and are scored apart from the rest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from shipped_rules import context_for

from ebpfguard.detect.egress_internal import InternalEgress
from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.tunnel_other import OtherTunnel
from ebpfguard.detect.tunnel_ssh import SshRemoteForward

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
CASES = [json.loads(line) for line in (CORPUS / "exec_tunnels.jsonl").read_text().splitlines()]
OVERLAY = yaml.safe_load((CORPUS / "tunnel_rules_overlay.yaml").read_text())
RULES = {"tunnel.ssh_remote_forward": SshRemoteForward, "tunnel.other": OtherTunnel,
         "egress.internal": InternalEgress}


SPLITS = ("tune", "heldout")


def score(fired_by_case: dict[str, set[str]], split: str) -> tuple[float, float, list[str]]:
    """(recall, false-positive rate, ids of the cases that went wrong) over one split."""
    expected = found = negatives = false_positives = 0
    wrong = []
    for case in CASES:
        if case.get("split", "tune") != split:
            continue
        fired, expect = fired_by_case.get(case["id"], set()), set(case["expect"])
        expected += len(expect)
        found += len(expect & fired)
        if not expect:
            negatives += 1
            false_positives += bool(fired)
        if fired != expect:
            wrong.append(case["id"])
    return found / expected, false_positives / negatives, wrong


def assert_targets(way: str, fired: dict[str, set[str]]) -> None:
    for split in SPLITS:
        recall, fp_rate, wrong = score(fired, split)
        print(f"tunnel corpus via {way}, {split} split: recall {recall:.3f}, "
              f"false-positive rate {fp_rate:.3f}, wrong: {wrong}")
        assert recall >= 0.97 and fp_rate <= 0.01, (split, wrong)


def detectors() -> list:
    overrides = {rule["id"]: rule.get("params", {}) for rule in OVERLAY["rules"]}
    return [cls(context_for(rule_id, **overrides.get(rule_id, {})))
            for rule_id, cls in RULES.items()]


def test_corpus_has_every_case_cited_and_enough_tunnel_cases():
    assert all(case["source"].startswith(("http", "hard negative: ")) for case in CASES)
    assert all(case["source"].startswith("http") for case in CASES if case["expect"])
    assert len({case["id"] for case in CASES}) == len(CASES)
    assert sum(case["kind"] == "exec" for case in CASES) >= 70


def test_detectors_meet_recall_and_false_positive_targets():
    rules = detectors()
    fired = {}
    for case in CASES:
        fired[case["id"]] = {rule.rule_id for rule in rules if case["kind"] in rule.kinds
                             and list(rule.on_event(case))}
    assert_targets("detectors", fired)


def test_engine_with_shipped_rules_meets_targets():
    engine = DetectionEngine(load_rules([CORPUS / "tunnel_rules_overlay.yaml"]))
    fired = {case["id"]: {alert["rule"] for alert in engine.process(dict(case))} & set(RULES)
             for case in CASES}
    assert_targets("engine", fired)


def test_replay_meets_targets():
    cli = [sys.executable, "-m", "ebpfguard"]
    env = {**os.environ, "PYTHONPATH": str(CORPUS.parents[1])}
    result = subprocess.run(
        [*cli, "replay", "--rules", str(CORPUS / "tunnel_rules_overlay.yaml"),
         str(CORPUS / "exec_tunnels.jsonl")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1, result.stderr  # 1: alerts were found
    fired: dict[str, set[str]] = {}
    for line in result.stdout.splitlines():
        alert = json.loads(line)
        if alert["rule"] in RULES:
            fired.setdefault(alert["event"]["id"], set()).add(alert["rule"])
    assert_targets("replay", fired)
