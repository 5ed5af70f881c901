"""User rules' cost: µs per event through the detection engine, with the shipped rules alone
(today's pipeline), with the example user rules, and with 200 generated user rules.

    .venv/bin/python -m bench.rules_bench [--rounds 7] [--repeat 20]

The events are a recording of the live agent (tests/corpus/user_rules_stream.jsonl: execs,
exits, sockets, connects, flows, GPU opens from sandboxes) plus the flow and DNS corpora,
replayed `--repeat` times with fresh pids so de-duplication does not short-cut the work.
Configurations run one after another in each round, in rotated order, and each round's
figure is divided by the shipped-only figure of the same round: the ratio is what to read on
a shared machine, where absolute times move with whatever else runs (the load average is
printed with the results). Times are the thread's CPU time, not wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from ebpfguard.detect.engine import DetectionEngine, load_rules
from ebpfguard.detect.replay import with_defaults

REPO = Path(__file__).resolve().parents[1]
STREAMS = [REPO / "tests" / "corpus" / name for name in ("user_rules_stream.jsonl", "flows.jsonl", "dns_pool.jsonl")]
EXAMPLE_RULES = REPO / "docs" / "examples" / "user-rules.yaml"


def events(repeat: int) -> list[dict]:
    """The recorded events, `repeat` times over, each copy with its own pids."""
    base = [with_defaults(json.loads(line)) for path in STREAMS for line in path.read_text().splitlines() if line.strip()]
    out = []
    for copy in range(repeat):
        for event in base:
            event = dict(event)
            process = dict(event.get("process") or {})
            if isinstance(process.get("pid"), int):
                process["pid"] += 1_000_000 * (copy + 1)
            event["process"] = process
            out.append(event)
    return out


ALL_SHAPES = tuple(range(10))
# Shapes the engine files by a value, prefix or suffix: no regex-only or kind-less rule.
KEYED_SHAPES = (0, 1, 3, 4, 6, 7, 8)


def generated_rules(count: int, shapes: tuple[int, ...] = ALL_SHAPES) -> str:
    """`count` user rules of the shapes people write: names, ports, ranges, globs, regexes,
    ancestry, argv, detector results; spread over the kinds, a few with no kind at all."""
    rules = []
    for i in range(count):
        shape = shapes[i % len(shapes)]
        condition = [
            f'kind = "exec" and process.comm = "tool{i}" and sandbox.name glob "sandbox-team{i}-*"',
            f'kind = "connect" and dport = {2000 + i} and daddr cidr "10.{i % 250}.0.0/16"',
            f'kind = "exec" and process.argv regex "--secret-{i}(=|$)" and sandbox.name startswith "sandbox-"',
            f'kind = "flow" and direction = "egress" and dport in ({3000 + i}, {4000 + i}) and not sandbox.name = "host"',
            f'kind = "dns" and query endswith ".team{i}.example" and sandbox.name glob "sandbox-*"',
            f'kind = "exec" and process.ancestry.comm in ("runner{i}", "agent{i}") and process.exe pmatch "/opt/app{i}"',
            f'kind = "open" and filename glob "/dev/accel{i}*" and not process.comm = "trainer{i}"',
            f'kind = "exec" and exec.miner.score >= {3 + i % 5} and sandbox.name = "sandbox-gpu-{i}"',
            f'kind in ("connect", "flow") and daddr = "198.18.{i % 250}.1" and dport > {1024 + i}',
            f'process.comm = "rare-tool-{i}" and sandbox.name glob "sandbox-*"',  # no kind: runs on every event
        ][shape]
        rules.append(f"  - id: gen.rule{i}\n    description: generated {i}\n    severity: low\n"
                     f"    condition: {json.dumps(condition)}\n")
    return "rules:\n" + "".join(rules)


def timed(engine_for: Callable[[], DetectionEngine], stream: list[dict]) -> tuple[float, int]:
    """CPU µs per event over the stream (this thread's CPU time: what other processes on a
    shared machine take is not counted, though they still cool its caches), and the alerts."""
    engine = engine_for()
    alerts = 0
    start = time.thread_time_ns()
    for event in stream:
        alerts += len(engine.process(event))
    return (time.thread_time_ns() - start) / 1000 / len(stream), alerts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rules", type=int, default=200, help="generated user rules")
    args = parser.parse_args()

    stream = events(args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        generated = Path(tmp) / "generated.yaml"
        generated.write_text(generated_rules(args.rules))
        keyed = Path(tmp) / "keyed.yaml"
        keyed.write_text(generated_rules(args.rules, KEYED_SHAPES))
        started = time.perf_counter()
        rule_sets = {
            "shipped rules (today)": load_rules(),
            "shipped + 5 example user rules": load_rules([EXAMPLE_RULES]),
            f"shipped + {args.rules} user rules, 10 shapes": load_rules([generated]),
            f"shipped + {args.rules} user rules, keyed shapes": load_rules([keyed]),
        }
        load_ms = (time.perf_counter() - started) * 1000 / len(rule_sets)
    names = list(rule_sets)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    alerts: dict[str, int] = {}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        this_round = {}
        for name in order:
            us, alerts[name] = timed(lambda: DetectionEngine(rule_sets[name]), stream)
            this_round[name] = us
            per_round[name].append(us)
        for name in names:
            ratios[name].append(this_round[name] / this_round[names[0]])

    print(f"{len(stream)} events per round ({len(stream) // args.repeat} recorded, x{args.repeat}), "
          f"{args.rounds} rounds; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; rules load (parse, check, compile) {load_ms:.0f} ms per set on average")
    print(f"{'configuration':<42} {'CPU µs/event median (min-max)':>28} {'ratio to today (min-max)':>26} {'alerts':>7}")
    for name in names:
        us, ratio = per_round[name], ratios[name]
        print(f"{name:<42} {statistics.median(us):>12.1f} ({min(us):.1f}-{max(us):.1f}){'':>6} "
              f"{statistics.median(ratio):>10.2f} ({min(ratio):.2f}-{max(ratio):.2f}){'':>6} {alerts[name]:>7}")


if __name__ == "__main__":
    main()
