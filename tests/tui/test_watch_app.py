"""The viewer app driven by keys (Textual's Pilot) over a recorded agent stream."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import pytest
from textual.widgets import Tree

from watch_recording import FrozenClock, recorded_events
from ebpfguard.watch.app import TABLE_ROWS, WatchApp
from ebpfguard.watch.detail_screen import DetailScreen
from ebpfguard.watch.event_table import EventTable
from ebpfguard.watch.help_screen import HelpScreen

SIZE = (200, 50)


@pytest.fixture
def events() -> list[dict]:
    return recorded_events()


def drive(events: list[dict], steps: Callable[[WatchApp, object], Awaitable[None]]) -> None:
    """Run the app headless, feed it the recording, then run `steps` with the pilot."""

    async def main() -> None:
        app = WatchApp(connection="recorded", clock=FrozenClock())
        async with app.run_test(size=SIZE) as pilot:
            app.ingest(events)
            app.redraw()
            await pilot.pause()
            await steps(app, pilot)

    asyncio.run(main())


def rows(app: WatchApp) -> list[list[str]]:
    table = app.query_one(EventTable)
    return [[cell.plain for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def type_text(pilot, text: str) -> None:
    await pilot.press(*["space" if ch == " " else ch for ch in text])
    await pilot.pause()


def test_free_text_filter_keeps_only_matching_events(events):
    async def steps(app, pilot):
        await pilot.press("slash")
        await type_text(pilot, "kworker")
        shown = rows(app)
        assert shown and all("kworker" in " ".join(row).lower() for row in shown)
        await pilot.press("escape")
        await pilot.pause()
        assert len(rows(app)) > len(shown)

    drive(events, steps)


def test_choosing_a_sandbox_in_the_panel_filters_the_table(events):
    async def steps(app, pilot):
        await pilot.press("s", "down", "down", "enter")  # all, sandbox-rl-train-7, agent-coder-42
        await pilot.pause()
        assert {row[1] for row in rows(app)} == {"agent-coder-42"}

    drive(events, steps)


def test_kind_and_rule_filters(events):
    async def steps(app, pilot):
        await pilot.press("slash")
        await type_text(pilot, "kind:connect")
        assert {row[4] for row in rows(app)} == {"connect"}
        await pilot.press("escape", "slash")
        await type_text(pilot, "rule:tunnel.*")
        assert [row[4] for row in rows(app)] == ["tunnel.ssh_remote_forward"] * 2

    drive(events, steps)


def test_paused_table_holds_still_while_events_keep_arriving_and_catches_up_on_resume(events):
    first, later = events[:50], events[50:]

    async def steps(app, pilot):
        await pilot.press("space")
        app.ingest(later)
        app.redraw()
        await pilot.pause()
        assert len(rows(app)) == 50
        assert "PAUSED" in str(app.query_one("#status").render())
        await pilot.press("space")
        await pilot.pause()
        assert len(rows(app)) == min(TABLE_ROWS, len(events))

    drive(first, steps)


def test_enter_on_an_alert_opens_its_detail_with_argv_and_ancestry_tree(events):
    async def steps(app, pilot):
        await pilot.press("a")  # alerts only; the newest miner alert is the kworker exec
        await pilot.press("slash")
        await type_text(pilot, "kworker")
        await pilot.press("enter", "enter")  # leave the filter box for the table, open the row
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        text = str(app.screen.query_one("#detail-text").render())
        assert "miner.exec (high)" in text and "stratum+tcp://pool.example.net:3333" in text
        tree = app.screen.query_one(Tree)
        chain, node = [], tree.root
        while node.children:
            node = node.children[0]
            chain.append(str(node.label).split()[1])
        assert chain == ["process_api", "record.sh", "sh", "kworker"]
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, DetailScreen)

    drive(events, steps)


def test_question_mark_shows_the_keys_and_escape_closes_it(events):
    async def steps(app, pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text").render())
        assert "pause/resume" in text and "rule:GLOB" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)

    drive(events, steps)


def test_sandbox_text_is_shown_escaped_never_as_markup_or_terminal_codes(events):
    async def steps(app, pilot):
        await pilot.press("slash")
        await type_text(pilot, "/bin/echo")
        summaries = [row[5] for row in rows(app) if row[4] == "exec"]
        assert "/bin/echo 'clear\\x1b[2Jme' '[bold red]not markup[/]'" in summaries

    drive(events, steps)


def test_agent_skips_are_totalled_in_the_status_line_and_shown_as_a_row(events):
    async def steps(app, pilot):
        app.ingest([{"kind": "skipped", "time": "2026-11-27T20:48:00.000000000Z", "missed": 1234}])
        app.redraw()
        await pilot.pause()
        assert "skipped 1,234" in str(app.query_one("#status").render())
        assert "skipped 1234 events" in rows(app)[0][5]

    drive(events, steps)


def test_t_on_a_sandbox_shows_its_verdict_and_timeline(events):
    from ebpfguard.watch.sandbox_panel import SandboxPanel
    from ebpfguard.watch.timeline_screen import TimelineScreen

    async def steps(app, pilot):
        await pilot.press("s")
        panel = app.query_one(SandboxPanel)
        while panel.name_under_cursor() != "sandbox-rl-train-7":
            await pilot.press("down")
        await pilot.press("t")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, TimelineScreen)
        assert screen.report["verdict"] == "flagged"
        assert {r["rule"] for r in screen.report["rules"]} == {"miner.exec", "egress.internal"}
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, TimelineScreen)

    drive(events, steps)


def test_t_without_a_sandbox_under_the_cursor_says_what_to_do(events):
    from ebpfguard.watch.timeline_screen import TimelineScreen

    async def steps(app, pilot):
        await pilot.press("t")
        await pilot.pause()
        assert not isinstance(app.screen, TimelineScreen)

    drive(events, steps)
