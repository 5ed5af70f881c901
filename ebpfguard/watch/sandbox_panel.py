"""Every sandbox seen, with its event and alert counts; choosing one filters the table."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ebpfguard.watch.format import safe
from ebpfguard.watch.messages import SandboxChosen
from ebpfguard.watch.model import SandboxCounts

ALL = "\x00all"  # the `all` row's key: no cgroup (so no sandbox) name can hold a NUL


class SandboxPanel(DataTable):
    """`all` first, then sandboxes with alerts, most alerts first, then by events."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_column("sandbox", key="sandbox")
        self.add_column("events", key="events")
        self.add_column("alerts", key="alerts")

    def show(self, sandboxes: dict[str, SandboxCounts]) -> None:
        chosen = self._cursor_key()
        self.clear()
        total_events = sum(c.events for c in sandboxes.values())
        total_alerts = sum(c.alerts for c in sandboxes.values())
        self.add_row(Text("all", style="bold"), Text(str(total_events)), _alerts(total_alerts), key=ALL)
        ordered = sorted(sandboxes.items(), key=lambda item: (-item[1].alerts, -item[1].events, item[0]))
        for name, counts in ordered:
            self.add_row(Text(safe(name)), Text(str(counts.events)), _alerts(counts.alerts), key=name)
        if chosen is not None and chosen in self.rows:
            self.move_cursor(row=self.get_row_index(chosen), animate=False)

    def name_under_cursor(self) -> str:
        """The sandbox on the cursor's row ("" on the `all` row or an empty panel)."""
        key = self._cursor_key()
        return "" if key is None or key.value == ALL else key.value

    def _cursor_key(self):
        if not self.row_count:
            return None
        return self.ordered_rows[self.cursor_row].key if self.cursor_row < self.row_count else None

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        key = message.row_key.value
        self.post_message(SandboxChosen(None if key == ALL else key))


def _alerts(n: int) -> Text:
    return Text(str(n), style="bold red" if n else "")
