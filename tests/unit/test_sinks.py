"""The JSON Lines sink: escaping, batching, and alerts that do not wait for the batch."""

import io
import json

from ebpfguard.outputs.sinks import JsonLinesSink, to_json_line
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
