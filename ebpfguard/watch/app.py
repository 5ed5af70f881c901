"""The viewer app: panels on the left, the live table, a filter box and a status line.

Events arrive in batches (from a reader thread, or `ingest` in tests) and go into the store
at once; the screen is redrawn from the store a few times a second, not per event, so the
viewer keeps up at thousands of events per second.
"""

from __future__ import annotations

import socket
import time
from typing import Callable, Optional

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Input, Static

from ebpfguard.outputs.history import HistoryBounds, SandboxHistory
from ebpfguard.outputs.report import build_report
from ebpfguard.watch.alerts_panel import AlertsPanel
from ebpfguard.watch.detail_screen import DetailScreen
from ebpfguard.watch.event_table import EventTable
from ebpfguard.watch.help_screen import HelpScreen
from ebpfguard.watch.messages import EventChosen, EventsArrived, SandboxChosen, StreamClosed
from ebpfguard.watch.model import EventStore, Filter
from ebpfguard.watch.sandbox_panel import SandboxPanel
from ebpfguard.watch.source import batches
from ebpfguard.watch.status_bar import status_text
from ebpfguard.watch.timeline_screen import TimelineScreen

TABLE_ROWS = 100     # rows in the event table: two screens; each redraw rebuilds them
ALERT_ROWS = 50
REDRAW_S = 0.5      # a full repaint costs ~0.1 s of CPU: twice a second leaves the rest for reading


class WatchApp(App):
    TITLE = "ebpfguard watch"
    CSS = """
    #side { width: 44; }
    #sandboxes { height: 1fr; border: round $primary; }
    #alerts { height: 1fr; border: round $error; }
    #events { width: 1fr; border: round $secondary; }
    #main { height: 1fr; }
    #status { height: 1; background: $panel; }
    #detail, #help, #timeline { width: 90%; height: 90%; border: thick $primary; background: $surface; padding: 0 1; }
    DetailScreen, HelpScreen, TimelineScreen { align: center middle; }
    """
    BINDINGS = [
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("slash", "focus_filter", "filter", key_display="/"),
        Binding("escape", "clear_filter", "clear filter", key_display="esc"),
        Binding("space,p", "toggle_pause", "pause/resume", key_display="space"),
        Binding("a", "toggle_alerts_only", "alerts only"),
        Binding("s", "focus_sandboxes", "sandboxes"),
        Binding("t", "timeline", "sandbox timeline"),
        Binding("e", "focus_events", "events"),
        Binding("ctrl+s", "screenshot", "save SVG screenshot"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, connection: str = "", conn: Optional[socket.socket] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.connection = connection  # shown in the status line: where events come from
        self.conn = conn
        self.store = EventStore(clock=clock)
        # Each sandbox's timeline from what this viewer received (host included: it is asked for).
        self.history = SandboxHistory(HistoryBounds(include_host=True))
        self.sandbox_choice = ""
        self.alerts_only = False
        self.filter = Filter()
        self.paused_at: Optional[int] = None  # store.received when paused
        self.shown = 0
        self.alerts_drawn = -1  # alerts in the store when the alerts panel was last drawn
        self._dirty = True

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="side"):
                yield SandboxPanel(id="sandboxes")
                yield AlertsPanel(id="alerts")
            yield EventTable(id="events")
        yield Static(id="status")
        yield Input(placeholder="filter: sandbox:GLOB kind:exec,connect rule:GLOB words   (/ to edit, esc to clear)",
                    id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#sandboxes").border_title = "sandboxes"
        self.query_one("#alerts").border_title = "alerts"
        self.query_one("#events").border_title = "events (newest first)"
        self.query_one(EventTable).focus()
        self.set_interval(REDRAW_S, self.redraw)
        if self.conn is not None:
            self.read_socket()

    @work(thread=True, exclusive=True)
    def read_socket(self) -> None:
        """Reader thread: batches from the socket become messages to the app."""
        try:
            for batch in batches(self.conn):
                self.post_message(EventsArrived(batch))
            self.post_message(StreamClosed("the agent closed the connection (stopped?)"))
        except OSError as exc:
            self.post_message(StreamClosed(f"reading the agent's socket failed: {exc}"))

    # -- data ----------------------------------------------------------------------------

    def ingest(self, events: list[dict]) -> None:
        """Take a batch of events; the screen catches up at the next redraw."""
        self.store.add(events)
        for event in events:
            self.history.write(event)
        self._dirty = True

    def on_events_arrived(self, message: EventsArrived) -> None:
        self.ingest(message.events)

    def on_stream_closed(self, message: StreamClosed) -> None:
        self.connection = f"disconnected: {message.reason}"
        self.notify(message.reason, title="agent", severity="warning", timeout=10)
        self._dirty = True

    def redraw(self) -> None:
        """Bring every view up to date with the store (a no-op when nothing changed)."""
        if not self._dirty:
            return
        self._dirty = False
        self.query_one(SandboxPanel).show(self.store.sandboxes)
        if self.paused_at is None:
            rows = self.store.newest(self.filter, TABLE_ROWS)
            self.shown = len(rows)
            self.query_one(EventTable).show(rows)
            if self.alerts_drawn != self.store.kinds["alert"]:
                self.alerts_drawn = self.store.kinds["alert"]
                self.query_one(AlertsPanel).show(self.store.alerts(ALERT_ROWS))
        self.update_status()

    def update_status(self) -> None:
        paused_new = None if self.paused_at is None else self.store.received - self.paused_at
        self.query_one("#status", Static).update(
            status_text(self.store, self.filter, self.shown, paused_new, self.connection))

    def apply_filter(self) -> None:
        text = self.query_one("#filter", Input).value
        self.filter = Filter.parse(text, sandbox=self.sandbox_choice, alerts_only=self.alerts_only)
        self._dirty = True
        self.redraw()

    # -- messages from the widgets -------------------------------------------------------

    def on_input_changed(self, message: Input.Changed) -> None:
        self.apply_filter()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.query_one(EventTable).focus()

    def on_sandbox_chosen(self, message: SandboxChosen) -> None:
        self.sandbox_choice = message.name or ""
        self.apply_filter()

    def on_event_chosen(self, message: EventChosen) -> None:
        event = self.store.get(message.seq)
        if event is not None:
            self.push_screen(DetailScreen(event))

    # -- actions -------------------------------------------------------------------------

    def action_help(self) -> None:
        self.push_screen(HelpScreen(list(self.BINDINGS)))

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.sandbox_choice = ""
        self.alerts_only = False
        self.query_one("#filter", Input).value = ""  # Input.Changed re-applies the filter
        self.apply_filter()
        self.query_one(EventTable).focus()

    def action_toggle_pause(self) -> None:
        self.paused_at = self.store.received if self.paused_at is None else None
        self._dirty = True
        self.redraw()

    def action_toggle_alerts_only(self) -> None:
        self.alerts_only = not self.alerts_only
        self.apply_filter()

    def action_focus_sandboxes(self) -> None:
        self.query_one(SandboxPanel).focus()

    def action_focus_events(self) -> None:
        self.query_one(EventTable).focus()

    def action_timeline(self) -> None:
        """The timeline of the sandbox under the sandboxes panel's cursor (or the one chosen)."""
        name = self.query_one(SandboxPanel).name_under_cursor() or self.sandbox_choice
        record = self.history.get(name) if name else None
        if record is None:
            self.notify("choose a sandbox in the sandboxes panel (s), then press t", title="timeline")
            return
        self.push_screen(TimelineScreen(build_report(record)))

    def action_screenshot(self) -> None:
        path = self.save_screenshot()
        self.notify(f"saved {path}", title="screenshot")

