"""Reading the deployment files tests check (deploy/, vagrant/)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "ebpfguard.service"


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """A systemd unit's assignments, key -> every value given (comments and sections dropped)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def unit_capabilities(path: Path = UNIT) -> list[str]:
    """The unit's CapabilityBoundingSet, as names."""
    return " ".join(unit_settings(path)["CapabilityBoundingSet"]).split()
