"""The recorded agent stream the TUI tests replay (no agent, no root needed)."""

from __future__ import annotations

import json
from pathlib import Path

RECORDED = Path(__file__).parent / "recorded.jsonl"


def recorded_events() -> list[dict]:
    """A real agent's output: two sandboxes, a renamed miner, an ssh -R, a metadata connect,
    and an argv holding a screen-clearing escape and Rich markup."""
    return [json.loads(line) for line in RECORDED.read_text().splitlines()]


class FrozenClock:
    """The viewer's clock in tests: the rate shown does not depend on how fast CI is."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
