"""The newest alerts, whatever the table's filter; choosing one opens its detail view."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ebpfguard.watch.format import safe, sandbox_name, short_time
from ebpfguard.watch.messages import EventChosen
from ebpfguard.watch.styles import row_style


class AlertsPanel(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        for name in ("time", "sandbox", "rule"):
            self.add_column(name, key=name)

    def show(self, alerts: list[tuple[int, dict]]) -> None:
        self.clear()
        for seq, alert in alerts:
            style = row_style(alert)
            self.add_row(Text(short_time(alert)[:8]), Text(sandbox_name(alert)),
                         Text(safe(alert.get("rule", "?")), style=style), key=str(seq))

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        self.post_message(EventChosen(int(message.row_key.value)))
