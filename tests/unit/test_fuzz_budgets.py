"""Every parser of sandbox-controlled input, fuzzed, with a time budget per input.

Crashing is not the only failure: a parser that backtracks (`Host **********x` took 21 s in
one regex) stalls the agent as surely. Inputs mix random text with long repetitions of short
units, the shape that makes backtracking regexes explode. The budget is generous (50 ms of
this thread's CPU time, the better of two runs, so a busy shared machine does not count);
blowups are orders of magnitude past it.
"""

from __future__ import annotations

import json
import time
from typing import Callable

from hypothesis import given
from hypothesis import strategies as st

from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.filereader import ReadResult
from ebpfguard.detect.miner_exec import MinerExec
from ebpfguard.detect.ssh_command import parse_ssh_command
from ebpfguard.detect.ssh_config import host_matches, read_remote_forwards
from ebpfguard.detect.stratum import classify_segment
from ebpfguard.enrich.wire.dns import DnsParseError, parse_dns_message
from ebpfguard.enrich.wire.tls import client_hello_sni
from ebpfguard.globs import Glob
from shipped_rules import context_for

BUDGET_S = 0.05

# Characters that mean something to one parser or another.
SPECIAL = "*?!.-_:@/\\\"'{}[],=+ \t\n#$%&()<>|;`~^0123456789abcxyzAZ"
unit = st.text(alphabet=SPECIAL, min_size=1, max_size=5)
repeated = st.builds(lambda head, body, count, tail: head + body * count + tail,
                     st.text(alphabet=SPECIAL, max_size=8), unit, st.integers(1, 1500),
                     st.text(alphabet=SPECIAL, max_size=4))
hostile_text = st.one_of(st.text(max_size=300), st.text(alphabet=SPECIAL, max_size=600), repeated)
hostile_bytes = st.one_of(st.binary(max_size=1500), repeated.map(lambda text: text.encode()))


def within_budget(work: Callable[[], object]) -> None:
    """Run `work`; fail when even the better of two runs takes more than the budget."""
    times = []
    for _ in range(2):
        started = time.thread_time()
        work()
        times.append(time.thread_time() - started)
        if times[-1] <= BUDGET_S:
            return
    raise AssertionError(f"took {min(times) * 1000:.0f} ms of CPU, budget {BUDGET_S * 1000:.0f} ms")


ENGINE = DetectionEngine(load_rules())
MINER = MinerExec(context_for("miner.exec"))


def exec_event(argv: list[str]) -> dict:
    return {"kind": "exec", "time": "2026-01-01T00:00:00Z", "retval": 0, "filename": argv[0] if argv else "",
            "sandbox": {"name": "sandbox-fuzz"}, "process": {"pid": 7, "comm": "x", "argv": argv}}


@given(st.lists(hostile_text, min_size=1, max_size=8))
def test_argv_scoring_by_every_exec_rule_is_bounded(argv):
    within_budget(lambda: ENGINE.process(exec_event(argv)))


@given(st.sampled_from(["xmrig", "ssh", "sh", "python3", "socat", "kworker"]), st.lists(hostile_text, max_size=8))
def test_argv_of_known_programs_is_scored_in_bounded_time(program, args):
    within_budget(lambda: ENGINE.process(exec_event([program, *args])))
    within_budget(lambda: ENGINE.process(exec_event(["sh", "-c", " ".join([program, *args])])))


@given(st.sampled_from(["openssh", "autossh", "dropbear", "plink"]), st.lists(hostile_text, max_size=8))
def test_ssh_command_lines_are_parsed_in_bounded_time(dialect, args):
    within_budget(lambda: parse_ssh_command(dialect, args))


@given(st.lists(st.one_of(hostile_text, st.builds(lambda n, tail: "*" * n + tail, st.integers(1, 60), unit)),
                min_size=1, max_size=6),
       st.one_of(hostile_text, st.text(alphabet="ax.", max_size=255)))
def test_ssh_host_patterns_match_in_bounded_time(patterns, host):
    within_budget(lambda: host_matches(patterns, host))


@given(hostile_text, st.text(alphabet="abx.-", min_size=1, max_size=255))
def test_ssh_config_files_are_read_in_bounded_time(config, host):
    command = parse_ssh_command("openssh", ["-F", "/cfg", host])
    files = {"/cfg": ReadResult(config.encode()), "/home/u/.ssh/x": ReadResult(config.encode())}
    reader = lambda path: files.get(path, ReadResult(None, "missing"))  # noqa: E731
    within_budget(lambda: read_remote_forwards(command, reader, "/home/u"))


@given(st.one_of(hostile_text, repeated.map(lambda text: json.dumps({"url": text, "user": text, "pools": [text]}))))
def test_miner_config_files_are_scored_in_bounded_time(text):
    within_budget(lambda: MINER.config_hints(text, "config:config.json"))


@given(hostile_bytes, st.booleans())
def test_stratum_flows_are_classified_in_bounded_time(data, at_start):
    within_budget(lambda: classify_segment(data, at_start))


@given(hostile_bytes)
def test_dns_packets_are_parsed_in_bounded_time(data):
    def parse():
        try:
            parse_dns_message(data)
        except DnsParseError:
            pass

    within_budget(parse)


@given(hostile_bytes)
def test_tls_client_hellos_are_parsed_in_bounded_time(data):
    within_budget(lambda: client_hello_sni(data))


@given(st.one_of(hostile_text, st.builds(lambda n, tail: "*" * n + tail, st.integers(1, 200), unit)), hostile_text)
def test_globs_over_sandbox_names_match_in_bounded_time(pattern, text):
    within_budget(lambda: Glob(pattern).match(text))


def test_the_reported_ssh_host_pattern_stall_is_gone():
    # The case: 21 s in one re.fullmatch with 10 stars, never back with 18.
    within_budget(lambda: host_matches(["*" * 18 + "x"], "a" * 40))


def test_a_miner_name_padded_with_dots_does_not_backtrack():
    # `(?:[-_.][a-z0-9.]+)*` read `xmrig....!` every possible way: exponential in the dots.
    within_budget(lambda: ENGINE.process(exec_event(["xmrig" + "." * 60 + "!"])))


def test_a_payload_nested_thousands_deep_is_no_stratum_and_no_recursion():
    for depth in (1000, 5000):
        assert classify_segment(b"[" * depth + b"{}" + b"]" * depth, True).complete == ()
