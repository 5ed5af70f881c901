"""Colours: one per event kind; alerts stand out by severity."""

from __future__ import annotations

KIND_STYLES = {
    "exec": "cyan",
    "exit": "grey50",
    "socket": "blue",
    "connect": "yellow",
    "flow": "magenta",
    "dns": "green",
    "open": "bright_blue",
    "action": "bold magenta",
    "skipped": "bold black on yellow",
}

SEVERITY_STYLES = {
    "critical": "bold white on red3",
    "high": "bold white on red3",
    "medium": "bold black on dark_orange",
    "low": "bold yellow",
    "info": "bold",
}


def row_style(event: dict) -> str:
    """The style of an event's whole row."""
    if event.get("kind") == "alert":
        return SEVERITY_STYLES.get(str(event.get("severity")), "bold red")
    return KIND_STYLES.get(str(event.get("kind")), "")
