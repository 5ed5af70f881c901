"""The configured outputs (Alertmanager, Falco, syslog, webhook) as one sink.

The outputs process (ebpfguard/outputs/process.py) writes every alert it gets from the agent
here; each output takes what it wants (alerts, and the Alertmanager output the exits of
processes it alerted on) onto its own queue, without blocking. Delivery problems are warned
about at most once per interval per output.
"""

from __future__ import annotations

import sys
import time
from typing import Mapping, Optional, Sequence, TextIO

from ebpfguard.outputs.delivery import Delivery, OutputSnapshot
from ebpfguard.outputs.settings import build_outputs
from ebpfguard.outputs.stats import RateLimitedWarnings

CLOSE_TIMEOUT_S = 3.0


class Forwarders:
    """Every output that is on, written as one sink."""

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        self.deliveries = tuple(deliveries)

    @classmethod
    def from_config(cls, section: Optional[Mapping], warn_interval_s: float, log: TextIO = sys.stderr) -> "Forwarders":
        """Build and start the outputs of a config's `outputs:` section (none: an empty sink)."""
        warnings: dict[str, RateLimitedWarnings] = {}

        def warn(output: str, message: str) -> None:
            # One limiter per output: each is used by that output's worker thread only.
            warnings.setdefault(output, RateLimitedWarnings(warn_interval_s, log)).warn(output, f"output {output}: {message}")

        deliveries = build_outputs(section, warn)
        for output in deliveries:
            output.start()
        return cls(deliveries)

    def __bool__(self) -> bool:
        return bool(self.deliveries)

    def write(self, event: dict) -> bool:
        for output in self.deliveries:
            try:
                output.offer(event)
            except Exception:  # noqa: BLE001 - an odd event must not reach past its output
                output.counters.add(dropped="rejected")
        return True  # the event was written where it must be (the JSON Lines output); outputs count their own losses

    def flush_if_due(self, now: Optional[float] = None) -> None:
        """Outputs send from their own threads: nothing to do on the main loop."""

    def close(self) -> None:
        """Stop every output together, waiting at most CLOSE_TIMEOUT_S in all."""
        for output in self.deliveries:
            output.stop()
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for output in self.deliveries:
            output.join(max(0.0, deadline - time.monotonic()))

    def counters(self) -> list[OutputSnapshot]:
        """Each output's counters (for the metrics endpoint; safe from any thread)."""
        return [output.counters.snapshot() for output in self.deliveries]
