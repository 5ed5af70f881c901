"""`?`: the keys and the filter syntax."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

FILTER_SYNTAX = (
    ("sandbox:GLOB", "events of matching sandboxes (or pick one in the sandbox panel)"),
    ("kind:exec,connect", "events of these kinds (alert, exec, exit, socket, connect, flow, dns, open)"),
    ("rule:GLOB", "alerts of matching rules, e.g. rule:miner.*"),
    ("other words", "must all appear in the summary, process or sandbox"),
)

TABLE_KEYS = (
    ("enter", "open the event under the cursor (table, alerts panel) or filter by a sandbox"),
    ("tab / shift+tab", "move between the sandbox panel, alerts panel, table and filter box"),
    ("up / down / pgup / pgdn", "move in a table"),
)


def help_text(bindings: list[Binding]) -> Text:
    out = Text()
    out.append("Keys\n", style="bold underline")
    for binding in bindings:
        if binding.description:
            out.append(f"  {binding.key_display or binding.key:<24}", style="bold")
            out.append(f"{binding.description}\n")
    for key, what in TABLE_KEYS:
        out.append(f"  {key:<24}", style="bold")
        out.append(f"{what}\n")
    out.append("\nFilter box\n", style="bold underline")
    for syntax, what in FILTER_SYNTAX:
        out.append(f"  {syntax:<24}", style="bold")
        out.append(f"{what}\n")
    out.append("\nRows are coloured by kind; alerts are highlighted by severity. The status line\n"
               "shows events per second and how many events the agent skipped for this viewer\n"
               "(it does when the viewer reads too slowly; the agent itself loses nothing).\n")
    return out


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.bindings_shown = bindings

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(help_text(self.bindings_shown), id="help-text")
