"""The JSON Lines sink: escaping, batching, alerts that do not wait for the batch, and the
event file: owner-only, bounded in size with rotation, and surviving copytruncate."""

import io
import json
import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from ebpfguard.outputs.history import SandboxHistory
from ebpfguard.outputs.sinks import FanOut, HeldUntilTurnEnd, JsonLinesSink, to_json_bytes, to_json_line
from ebpfguard.outputs.stats import PipelineStats


class CountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushes = 0

    def flush(self):
        self.flushes += 1


def test_sandbox_controlled_strings_cannot_break_the_line_or_reach_a_terminal():
    line = to_json_line({"argv": ["a\nb", "\x1b[2J", "caf\xe9", '"}{"kind":"alert"']})
    assert line.count("\n") == 1 and line.endswith("\n")
    assert all(32 <= ord(c) < 127 for c in line[:-1])
    assert json.loads(line)["argv"][1] == "\x1b[2J"


def test_events_wait_for_the_interval_but_an_alert_goes_out_at_the_next_turn():
    stream = CountingStream()
    sink = JsonLinesSink(stream, PipelineStats(), flush_interval_s=60)
    sink.write({"kind": "exec"})
    sink.flush_if_due()
    assert stream.flushes == 0
    sink.write({"kind": "alert"})
    sink.flush_if_due()
    assert stream.flushes == 1
    sink.write({"kind": "exec"})
    sink.flush_if_due()
    assert stream.flushes == 1


def test_an_unwritable_output_is_counted_as_dropped():
    stream = io.StringIO()
    stats = PipelineStats()
    sink = JsonLinesSink(stream, stats)
    stream.close()
    assert sink.write({"kind": "exec"}) is False
    assert stats.snapshot().dropped[("output", "write_error")] == 1


OUTPUT = {"flush_interval_ms": 50, "max_bytes": 0, "keep": 3, "group": ""}


def test_the_event_file_is_created_owner_only(tmp_path):
    sink = JsonLinesSink.open(str(tmp_path / "events.jsonl"), PipelineStats(), OUTPUT)
    sink.close()
    assert stat.S_IMODE(os.stat(tmp_path / "events.jsonl").st_mode) == 0o600


def test_an_existing_readable_event_file_is_made_owner_only(tmp_path):
    (tmp_path / "events.jsonl").write_text("")
    os.chmod(tmp_path / "events.jsonl", 0o644)
    JsonLinesSink.open(str(tmp_path / "events.jsonl"), PipelineStats(), OUTPUT).close()
    assert stat.S_IMODE(os.stat(tmp_path / "events.jsonl").st_mode) == 0o600


def test_a_configured_group_may_read_the_event_file(tmp_path):
    group = os.getgid()
    JsonLinesSink.open(str(tmp_path / "events.jsonl"), PipelineStats(), {**OUTPUT, "group": str(group)}).close()
    status = os.stat(tmp_path / "events.jsonl")
    assert (stat.S_IMODE(status.st_mode), status.st_gid) == (0o640, group)


def test_the_event_file_is_rotated_past_its_size_bound(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonLinesSink.open(str(path), PipelineStats(), {**OUTPUT, "max_bytes": 1000, "keep": 2})
    for n in range(100):
        sink.write({"kind": "exec", "n": n, "pad": "x" * 40})
        sink.flush()
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    for name in files:
        assert os.path.getsize(tmp_path / name) < 1000 + 100
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    # The newest lines are in the file, the oldest rotated away past `keep`.
    last = [json.loads(line)["n"] for line in path.read_text().splitlines()]
    assert last[-1] == 99
    kept = [json.loads(line)["n"] for name in ("events.jsonl.2", "events.jsonl.1", "events.jsonl")
            for line in (tmp_path / name).read_text().splitlines()]
    assert kept == sorted(kept) and kept[-1] == 99


def test_the_agent_keeps_writing_after_logrotate_copytruncate(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonLinesSink.open(str(path), PipelineStats(), OUTPUT)
    sink.write({"kind": "exec", "n": 1})
    sink.flush()
    # copytruncate: copy the file aside, then truncate it in place while the agent holds it.
    (tmp_path / "events.jsonl.1").write_bytes(path.read_bytes())
    os.truncate(path, 0)
    sink.write({"kind": "exec", "n": 2})
    sink.close()
    assert path.read_bytes() == b'{"kind":"exec","n":2}\n'  # no hole of zeros before it
    assert json.loads((tmp_path / "events.jsonl.1").read_text())["n"] == 1


# Strings from every plane, lone surrogates included; ints past 64 bits; keys orjson refuses.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80) | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(min_value=0, max_value=2**70), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
@settings(max_examples=300, deadline=None)
def test_a_line_is_exactly_the_stdlib_ascii_encoding_whichever_encoder_wrote_it(event):
    line = to_json_line(event)
    assert line == json.dumps(event, ensure_ascii=True, separators=(",", ":")) + "\n"
    assert all(32 <= ord(c) < 127 for c in line[:-1])


def test_the_fast_and_the_fallback_paths_both_escape_what_a_sandbox_could_use_against_a_terminal():
    ascii_event = {"argv": ["a\x00b", "\x1b]0;owned\x07", "\x7f", "\n"], "pid": 2**63 - 1}
    non_ascii_event = {"argv": ["caf\xe9\x1b[2J", "\u2028", "\ud800"], "big": 2**65, 7: "int key"}
    for event in (ascii_event, non_ascii_event):
        line = to_json_bytes(event)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert all(32 <= b < 127 for b in line[:-1])
    assert json.loads(to_json_bytes(ascii_event))["argv"][1] == "\x1b]0;owned\x07"
    assert json.loads(to_json_bytes(non_ascii_event))["7"] == "int key"


def test_finite_floats_read_back_as_the_same_numbers():
    event = {"utilization": 0.1, "large": 1e16, "small": 5e-324, "negative": -2.5}
    assert json.loads(to_json_line(event)) == event


def test_a_sink_held_until_the_turn_ends_gets_the_turns_events_then_in_order():
    history = SandboxHistory()
    held = HeldUntilTurnEnd(history)
    for pid in (10, 11):
        assert held.write({"kind": "exec", "time": "2026-11-30T04:00:00.000000000Z",
                           "sandbox": {"name": "sandbox-a"}, "process": {"pid": pid, "argv": ["x"]}})
    assert history.get("sandbox-a") is None  # nothing before the turn ends
    held.flush_if_due()
    assert list(history.get("sandbox-a").processes) == [10, 11]
    held.write({"kind": "exit", "time": "2026-11-30T04:00:01.000000000Z",
                "sandbox": {"name": "sandbox-a"}, "process": {"pid": 10}, "exit_code": 0})
    held.close()  # what is held is written before the sink closes
    assert history.get("sandbox-a").processes[10]["exited"] is True


def test_a_batch_written_at_once_gives_the_same_lines_as_one_event_at_a_time():
    events = [{"kind": "connect", "n": n, "argv": ["ü", "\x1b[2J"]} for n in range(3)] + [{"kind": "alert", "n": 3}]
    one_by_one, batched = io.BytesIO(), io.BytesIO()
    single = JsonLinesSink(one_by_one, PipelineStats())
    for event in events:
        assert single.write(event)
    history = SandboxHistory()
    fan_out = FanOut(JsonLinesSink(batched, PipelineStats()), HeldUntilTurnEnd(history))
    assert fan_out.write_all(events) == [True] * 4
    fan_out.flush_if_due()  # an alert in the batch: flushed at the turn's end
    single.flush()
    assert batched.getvalue() == one_by_one.getvalue()
    assert batched.getvalue().isascii() and batched.getvalue().count(b"\n") == 4
