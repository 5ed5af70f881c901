"""The live event table: newest first, one row per event, coloured by kind."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from ebpfguard.watch.format import kind_label, safe, sandbox_name, short_time, summary
from ebpfguard.watch.messages import EventChosen
from ebpfguard.watch.styles import row_style

# Fixed widths: DataTable otherwise measures every cell of every row on each redraw.
COLUMNS = (("time", 12), ("sandbox", 20), ("pid", 7), ("process", 15), ("kind", 25), ("summary", 400))


def event_cells(event: dict) -> tuple[Text, ...]:
    """An event's cells. `Text`, never `str`: DataTable would parse a str as Rich markup,
    and a sandbox could then style or hide what the operator sees."""
    process = event.get("process") or {}
    # An alert's kind column names its rule: that is what the operator scans for.
    kind = safe(event.get("rule", "alert")) if event.get("kind") == "alert" else kind_label(event)
    style = row_style(event)
    values = (short_time(event), sandbox_name(event), str(process.get("pid", "")),
              safe(process.get("comm", "")), kind, summary(event))
    return tuple(Text(value, style=style, no_wrap=True) for value in values)


class EventTable(DataTable):
    """Shows what it is given; the app decides which events and when (in batches)."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = False
        for name, width in COLUMNS:
            self.add_column(name, key=name, width=width)

    def show(self, rows: list[tuple[int, dict]]) -> None:
        """Replace the rows, keeping the cursor on the event it was on (if still shown)."""
        kept = self._cursor_key() if self.cursor_row > 0 else None
        self.clear()
        self.add_rows_keyed(rows)
        if kept is not None and kept in self.rows:
            self.move_cursor(row=self.get_row_index(kept), animate=False)

    def add_rows_keyed(self, rows: list[tuple[int, dict]]) -> None:
        for seq, event in rows:
            self.add_row(*event_cells(event), key=str(seq))

    def _cursor_key(self):
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except CellDoesNotExist:  # an empty table has no cursor row
            return None

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        message.stop()
        self.post_message(EventChosen(int(message.row_key.value)))
