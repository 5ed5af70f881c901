"""Shared test helpers: a tiny registered detector and rules files written to tmp_path."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ebpfguard.detect.registry import DETECTORS, Detector, Finding, detector

if "test.keyword" not in DETECTORS:

    @detector("test.keyword", kinds=("exec",))
    class KeywordDetector(Detector):
        """Test detector: flags execs whose argv holds one of `params.words`."""

        def __init__(self, ctx):
            super().__init__(ctx)
            self.words = set(ctx.params["words"])

        def on_event(self, event):
            hits = sorted(self.words & set(event["process"]["argv"]))
            if hits:
                yield Finding(summary="keyword", evidence={"words": hits})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# miner.exec off, and a condition over its score: the rule's code still runs for the field.
MINER_SCORE_CONDITION_ONLY = """\
    rules:
      - id: miner.exec
        enabled: false
      - id: user.lowish_miner_score
        description: x
        condition: kind = "exec" and exec.miner.score >= 2
        severity: low
"""

KEYWORD_RULE = """\
    lists:
      words: [alpha, beta]
    conditions:
      trusted: {sandboxes: ["sandbox-trusted-*"]}
    rules:
      - id: test.keyword
        description: test rule
        severity: low
        tags: [T0000]
        evidence: [words]
        params: {words: "@words", other: 1}
        allow: [trusted, {comm: [ignored]}]
"""


