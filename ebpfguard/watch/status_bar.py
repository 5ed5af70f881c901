"""The status line under the table: rate, totals, what the agent skipped, the filter, pause."""

from __future__ import annotations

from rich.text import Text

from ebpfguard.watch.format import safe
from ebpfguard.watch.model import EventStore, Filter


def status_text(store: EventStore, flt: Filter, shown: int, paused_new: int | None, connection: str) -> Text:
    out = Text()
    out.append(f" {store.rate():,.0f} ev/s ", style="bold")
    out.append(f" received {store.received:,}  shown {shown:,} ")
    skipped_style = "bold black on yellow" if store.skipped_by_agent else ""
    out.append(f" skipped {store.skipped_by_agent:,} ", style=skipped_style)
    out.append(f" filter: {safe(flt.describe())} ")
    if paused_new is not None:
        out.append(f" PAUSED ({paused_new:,} new) ", style="bold black on cyan")
    out.append(f" {connection}", style="dim")
    return out

