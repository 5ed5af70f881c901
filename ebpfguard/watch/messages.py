"""Messages between the viewer's widgets, the socket reader and the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from textual.message import Message


@dataclass
class EventsArrived(Message):
    """A batch of lines read from the agent (events, alerts and `skipped` markers)."""

    events: list


@dataclass
class StreamClosed(Message):
    """The agent closed the socket (it stopped), or reading it failed."""

    reason: str


@dataclass
class SandboxChosen(Message):
    """A sandbox picked in the sandbox panel; None is the `all` row."""

    name: Optional[str]


@dataclass
class EventChosen(Message):
    """An event picked for the detail view, by its sequence number in the store."""

    seq: int
