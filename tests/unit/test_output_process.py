"""The outputs process: the agent's alerts reach a real receiver through it, only what the
outputs want crosses the pipe, counters come back, and it outlives a ^C until its pipe closes."""

from __future__ import annotations

import json
import os
import signal

import pytest

from ebpfguard.config import load_config
from ebpfguard.outputs.process import OutputProcess, OutputsFailed
from receivers import HttpReceiver, wait_until


def outputs_section(**webhook) -> dict:
    section = load_config()["outputs"]
    section["webhook"].update(webhook)
    return section


def alert(n: int, pid: int = 100) -> dict:
    return {"kind": "alert", "rule": "miner.exec", "severity": "high", "seq": n, "sandbox": {"name": "sandbox-a"},
            "process": {"pid": pid, "argv": ["xmrig"]}}


@pytest.fixture
def receiver():
    r = HttpReceiver().up()
    yield r
    r.down()


def test_no_process_is_started_when_no_output_is_on():
    outputs = OutputProcess(load_config()["outputs"], 5)
    assert not outputs and outputs.proc is None and outputs.counters() == []


def test_alerts_cross_to_the_outputs_process_and_its_counters_come_back(receiver, tmp_path):
    outputs = OutputProcess(outputs_section(url=receiver.url, spool_dir=str(tmp_path)), 5)
    try:
        for n in range(5):
            outputs.write(alert(n))
        outputs.write({"kind": "exec", "process": {"pid": 7}})  # not for the outputs: not sent over
        wait_until(lambda: len(receiver.bodies()) == 5, 20, "5 alerts delivered")

        def sent() -> float:
            outputs.flush_if_due()
            return outputs.counters()[0].sent

        wait_until(lambda: sent() == 5, 10, "the counters reported back")
        assert [json.loads(b)["seq"] for b in receiver.bodies()] == list(range(5))
    finally:
        outputs.close()
    assert outputs.proc.returncode == 0


def test_the_outputs_process_ignores_a_terminal_interrupt_and_finishes_when_the_pipe_closes(receiver, tmp_path):
    outputs = OutputProcess(outputs_section(url=receiver.url, spool_dir=str(tmp_path)), 5)
    os.kill(outputs.proc.pid, signal.SIGINT)  # ^C reaches the whole process group
    os.kill(outputs.proc.pid, signal.SIGTERM)
    outputs.write(alert(1))
    outputs.close()
    assert outputs.proc.returncode == 0 and [json.loads(b)["seq"] for b in receiver.bodies()] == [1]
    assert outputs.counters()[0].sent == 1


def test_an_outputs_process_that_cannot_start_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputsFailed) as problem:
        OutputProcess(outputs_section(url="http://127.0.0.1:1/", spool_dir=str(blocker / "spool")), 5)
    assert "outputs could not start" in str(problem.value) and str(blocker) in str(problem.value)


def test_the_json_lines_sink_hands_its_line_to_later_sinks_of_the_same_event_only():
    import io

    from ebpfguard.outputs.sinks import JsonLinesSink, to_json_bytes
    from ebpfguard.outputs.stats import PipelineStats

    sink = JsonLinesSink(io.StringIO(), PipelineStats())
    first, second = alert(1), alert(1)
    sink.write(first)
    assert sink.line_of(first) == to_json_bytes(first)
    assert sink.line_of(second) is None  # equal, but not the object just written
