"""Snapshots of the viewer's screens over the recorded stream (pytest-textual-snapshot).

After an intended change to the look: `pytest tests/tui --snapshot-update`, then review the
SVGs under __snapshots__ in the diff.
"""

from __future__ import annotations

from watch_recording import FrozenClock, recorded_events
from ebpfguard.watch.app import WatchApp

SIZE = (200, 50)


def loaded_app() -> WatchApp:
    return WatchApp(connection="recorded", clock=FrozenClock())


def feed(pilot) -> None:
    pilot.app.ingest(recorded_events())
    pilot.app.redraw()


def test_main_screen(snap_compare):
    assert snap_compare(loaded_app(), terminal_size=SIZE, run_before=feed)


def test_main_screen_filtered_to_alerts(snap_compare):
    assert snap_compare(loaded_app(), terminal_size=SIZE, run_before=feed, press=["a"])


def test_detail_of_the_newest_event(snap_compare):
    assert snap_compare(loaded_app(), terminal_size=SIZE, run_before=feed, press=["a", "enter"])
