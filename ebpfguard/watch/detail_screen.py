"""One event in full: process and argv, destination, alert evidence, ancestry as a tree."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static, Tree

from ebpfguard.watch.format import destination, safe, summary
from ebpfguard.watch.styles import row_style


def detail_text(event: dict) -> Text:
    """Everything but the ancestry, as styled lines (every value escaped, nothing parsed)."""
    trigger = event.get("event") or event  # an alert describes the event that raised it
    process = event.get("process") or trigger.get("process") or {}
    sandbox = event.get("sandbox") or {}
    out = Text()

    def line(label: str, value: object, style: str = "") -> None:
        out.append(f"{label:<12}", style="bold")
        out.append(safe(value) + "\n", style=style)

    line("kind", event.get("kind"), row_style(event))
    if event.get("kind") == "alert":
        line("rule", f"{event.get('rule')} ({event.get('severity')})", row_style(event))
        line("summary", event.get("summary"))
        line("tags", ", ".join(map(str, event.get("tags") or [])))
        line("raised by", f"{trigger.get('kind')}: {summary(trigger)}")
    else:
        line("summary", summary(event))
    line("time", event.get("time"))
    line("node", event.get("node"))
    line("sandbox", f"{sandbox.get('name')} ({sandbox.get('runtime')})")
    line("cgroup", sandbox.get("cgroup"))
    for key in ("pod", "namespace", "container_id"):
        if sandbox.get(key):
            line(key, sandbox[key])
    line("pid", f"{process.get('pid')}   ppid {process.get('ppid')}   uid {process.get('uid')}")
    line("comm", process.get("comm"))
    line("exe", process.get("exe"))
    where = destination(trigger) or _evidence_destination(event)
    if where:
        line("destination", where + (f"  sni {trigger['sni']}" if trigger.get("sni") else ""))
    argv = process.get("argv") or []
    truncated = "  (truncated by the probe)" if process.get("argv_truncated") else ""
    out.append(f"argv ({len(argv)}){truncated}\n", style="bold")
    for i, arg in enumerate(argv):
        out.append(f"  [{i}] ", style="dim")
        out.append(safe(arg) + "\n")
    if event.get("partial"):
        line("unknown", ", ".join(map(str, event["partial"])))
    if event.get("kind") == "alert":
        out.append("evidence\n", style="bold")
        # ensure_ascii: JSON escapes every control character, so the text is terminal-safe.
        out.append(json.dumps(event.get("evidence"), indent=2, ensure_ascii=True, default=str) + "\n")
    return out


def _evidence_destination(alert: dict) -> str:
    found = (alert.get("evidence") or {}).get("destination") if alert.get("kind") == "alert" else None
    return destination(found) if isinstance(found, dict) else ""


def ancestry_tree(event: dict) -> Tree:
    """The oldest known ancestor at the root, down to the event's process."""
    process = event.get("process") or (event.get("event") or {}).get("process") or {}
    chain = list(reversed(process.get("ancestry") or [])) + [process]
    tree: Tree = Tree(Text("ancestry", style="bold"), id="ancestry")
    node = tree.root
    for proc in chain:
        label = Text(f"{proc.get('pid')} ", style="bold")
        label.append(safe(proc.get("comm")))
        label.append(f"  {safe(proc.get('exe'))}", style="dim")
        node = node.add(label, expand=True)
    tree.root.expand_all()
    return tree


class DetailScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,enter", "dismiss", "close")]

    def __init__(self, event: dict) -> None:
        super().__init__()
        self.event = event

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(detail_text(self.event), id="detail-text")
            yield ancestry_tree(self.event)
