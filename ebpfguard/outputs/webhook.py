"""Our own alert JSON, one POST per alert, to any URL (headers, a bearer token, from a file)."""

from __future__ import annotations

from ebpfguard.outputs import alertview
from ebpfguard.outputs.delivery import OneShot
from ebpfguard.outputs.sinks import to_json_line


class WebhookFormat(OneShot):
    """Each alert at or above `min_severity`, exactly as the JSON Lines output writes it."""

    def __init__(self, min_severity: str) -> None:
        self.min_severity = min_severity

    def accepts(self, event: dict) -> bool:
        return alertview.wants(event, self.min_severity)

    def payloads(self, item: dict, now: float) -> list[bytes]:
        return [to_json_line(item).rstrip("\n").encode("ascii")]
