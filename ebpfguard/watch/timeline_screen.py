"""One sandbox's verdict and timeline, as `ebpfguard report` prints it, from what the viewer
has received: the same history and the same report code as the agent's."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ebpfguard.outputs.report import render_text


class TimelineScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,t", "app.pop_screen", "close")]

    def __init__(self, report: dict) -> None:
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="timeline"):
            # render_text escapes every value the sandbox controls; Text() renders no markup.
            yield Static(Text(render_text(self.report),
                              style="bold red" if self.report["verdict"] == "flagged" else ""))

    def on_mount(self) -> None:
        self.query_one("#timeline").border_title = "timeline (esc to close)"
