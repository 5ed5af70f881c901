"""The benchmark's storm search, alert-latency attribution and report: figures from raw records,
the Markdown of a run (RESULTS.md) and the README section rendered from it. The benchmark
itself is never run by the tests: the records are built here as the phases write them."""

from __future__ import annotations

import json

from bench.alert_latency import from_sandbox_or_not_alert
from bench.latency import latencies_by_window
from bench.readme_table import render
from bench.report import aggregate, render_markdown, storms
from bench.storms import bisect_rates, events_in_window, keeps_up, round_rate
from bench.workloads import WORKLOADS, Run
from ebpfguard.clock import rfc3339_ns

CONFIGS = ("none", "ebpfguard", "ebpfguard-shipped", "floor-empty", "floor-unread", "bpftrace", "auditd")


def step(workload: str, rate: int, ops: float, events: float, lost: int, p99_ms: float) -> dict:
    return {"workload": workload, "target_rate": rate, "ops_per_s": ops, "events_per_s": events, "lost": lost,
            "latency": {"n": 1000, "p50_ms": p99_ms / 2, "p99_ms": p99_ms, "max_ms": p99_ms * 1.1},
            "alert_latency": {}}


def storm_results() -> dict:
    """connect keeps up flat out; refused falls behind flat out and keeps up at 12,000/s of the
    bisection's 10,000, 15,000 and 12,000; exec loses events at every step."""
    return {
        "steps": [
            step("connect", 0, 30_000, 60_000, 0, 40.0),
            step("refused", 0, 60_000, 150_000, 3, 2600.0),
            step("refused", 10_000, 10_000, 20_000, 0, 20.0),
            step("refused", 15_000, 15_000, 30_000, 0, 150.0),
            step("refused", 12_000, 12_000, 24_000, 0, 80.0),
            step("exec", 0, 1_500, 3_000, 7, 30.0),
        ],
        "shipped": [
            {**step("refused", 0, 150_000, 6_000, 0, 35.0), "held_back": 290_000, "shipped": True},
        ],
        "bpftrace": [
            {"workload": "connect", "ops_per_s": 20_000, "events_per_s": 40_000, "lost": 0, "cpu_s": 1.0},
            {"workload": "refused", "ops_per_s": 20_000, "events_per_s": 80_000, "lost": 0, "cpu_s": 1.0},
            {"workload": "exec", "ops_per_s": 1_200, "events_per_s": 4_800, "lost": 12, "cpu_s": 1.0},
        ],
    }


def alert_results() -> dict:
    summary = lambda p50, p99: {"n": 201, "p50_ms": p50, "p99_ms": p99, "max_ms": p99 + 1}  # noqa: E731
    return {"idle_s": 10.0, "idle_cpu_fraction": 0.004, "idle_wakeups_per_s": 0.8, "lost": 0, "rows": [
        {"load": "none", "execs": 201, "rate": 20, "alerts": 201, "alert_latency": summary(9.0, 21.5),
         "event_latency": summary(9.0, 30.0), "storm_ops_per_s": None},
        {"load": "connect storm flat out", "execs": 201, "rate": 20, "alerts": 200,
         "alert_latency": summary(12.0, 24.0), "event_latency": summary(50.0, 90.0), "storm_ops_per_s": 25_000.0},
    ]}


def full_results(**phases) -> dict:
    """A run with every configuration through every workload (two rounds) and a soak, plus `phases`."""
    rounds = []
    for r in range(2):
        for n, config in enumerate(CONFIGS):
            runs = [{"workload": w.name, "ops": 1000, "seconds": 1.0, "ops_per_s": 1000.0 - 10 * n - r,
                     "ns_per_op": 1e6 / (1000.0 - 10 * n - r), "start_ns": 0, "end_ns": 1} for w in WORKLOADS]
            tracer = {"lost": 0, "events": 10_000 if config in ("ebpfguard", "bpftrace") else None, "alerts": None,
                      "cpu_s": 1.0, "peak_rss_kib": 100 * 1024, "rss_kib": 90 * 1024, "detail": {}}
            rounds.append({"round": r, "config": config, "runs": runs, "settle_s": {}, "tracer": tracer})
    latency_round = {"config": "ebpfguard", "runs": rounds[1]["runs"], "tracer": rounds[1]["tracer"],
                     "latency_ns": {"exec": {"event": [5_000_000, 9_000_000], "alert": [7_000_000]}}}
    return {"machine": {"cpus": 2, "cpu_model": "Intel(R) Xeon(R) Processor", "memory_gib": 4.0, "kernel": "6.18.0-test",
                        "bpftrace": "bpftrace v0.17.0", "auditd": "auditctl version 3.0.9",
                        "loadavg": ["0.10", "0.20", "0.30"], "loadavg_end": ["0.40", "0.50", "0.60"],
                        "bpf_programs_loaded": 0, "minutes": 13.0},
            "settings": {"rounds": 2, "seconds": 2.0, "quick": False, "phases": []},
            "workloads": [{"name": w.name, "unit": w.unit} for w in WORKLOADS],
            "rounds": rounds, "latency_round": latency_round,
            "soak": {"idle_s": 10.0, "idle_cpu_fraction": 0.005, "events": 1_000_000, "lost": 0,
                     "rss_kib_start": 120 * 1024, "anon_rss_kib_start": 60 * 1024, "rss_kib_after": 140 * 1024,
                     "anon_rss_kib_after": 70 * 1024, "peak_rss_kib": 150 * 1024, "cpu_s": 8.0},
            **phases}


def results_markdown(results: dict) -> str:
    return render_markdown(results, aggregate(results))


def test_a_step_keeps_up_only_with_nothing_lost_and_event_p99_under_100_ms():
    assert keeps_up(step("refused", 0, 60_000, 120_000, 0, 99.9))
    assert not keeps_up(step("refused", 0, 60_000, 120_000, 0, 100.0))
    assert not keeps_up(step("refused", 0, 60_000, 120_000, 1, 10.0))
    assert not keeps_up({**step("exec", 0, 0, 0, 0, 1.0), "latency": {}}), "a step with no event kept nothing up"


def test_paced_rates_bisect_between_the_fastest_that_kept_up_and_the_slowest_that_did_not():
    assert bisect_rates(20_000, []) == 10_000
    assert bisect_rates(20_000, [(10_000, True)]) == 15_000
    assert bisect_rates(20_000, [(10_000, False)]) == 5_000
    assert bisect_rates(20_000, [(10_000, True), (15_000, False)]) == 12_000  # 12,500 to two figures
    assert bisect_rates(20, [(19, True)]) is None, "nothing left between 19 and 20 to try"


def test_rates_are_rounded_to_two_significant_figures():
    assert [round_rate(x) for x in (12_359, 987, 0.2, 61_000.4)] == [12_000, 990, 1, 61_000]


def test_bpftrace_events_are_counted_in_the_storm_window_only():
    lines = ["ready", "100 connect pid=1 comm=storm family=2 daddr=127.0.0.1 dport=1 retval=0",
             "200 exec_args pid=2 comm=sh filename=/bin/true", "/bin/true -x", "Lost 12 events",
             "300 exit pid=2 comm=true code=0", "400 socket pid=1 comm=storm family=2 type=1 protocol=0 retval=3"]
    assert events_in_window(lines, 200, 300) == 2
    assert events_in_window(lines, 0, 10_000) == 4
    assert events_in_window(lines, 500, 600) == 0


def test_alerts_are_attributed_to_the_window_of_their_triggering_event():
    quiet = Run("quiet", 10, 1.0, 10.0, 1e8, 1_000_000_000, 2_000_000_000)
    loaded = Run("storm", 10, 1.0, 10.0, 1e8, 3_000_000_000, 4_000_000_000)
    exec_event = {"kind": "exec", "time": rfc3339_ns(1_500_000_000)}
    lines = [(json.dumps(exec_event).encode(), 1_510_000_000),
             (json.dumps({"kind": "alert", "event": exec_event}).encode(), 1_520_000_000),
             (json.dumps({"kind": "alert", "event": {"time": rfc3339_ns(3_200_000_000)}}).encode(), 3_230_000_000),
             (json.dumps({"kind": "connect", "time": rfc3339_ns(2_500_000_000)}).encode(), 2_600_000_000)]
    found = latencies_by_window(lines, [quiet, loaded])
    assert found["quiet"] == {"event": [10_000_000], "alert": [20_000_000]}
    assert found["storm"] == {"event": [], "alert": [30_000_000]}


def test_each_storm_keeps_its_fastest_step_that_kept_up_its_flat_out_step_and_bpftrace():
    figures = storms(storm_results())
    assert figures["connect"]["sustained"]["target_rate"] == 0, "flat out kept up"
    assert figures["refused"]["sustained"]["target_rate"] == 12_000
    assert figures["refused"]["flat_out"]["lost"] == 3
    assert figures["exec"]["sustained"] is None
    assert figures["exec"]["bpftrace"]["lost"] == 12


def test_the_run_report_has_the_storms_side_by_side_with_bpftrace_and_the_alert_latency_table():
    markdown = results_markdown(full_results(storms=storm_results(), alert_latency=alert_results()))
    assert ("| refused | 12,000 | 24,000 | 80.0 | 60,000 | 150,000 | 3 | 2600.0 | 20,000 | 80,000 | 0 |"
            in markdown)
    assert "| connect | 30,000 (flat out) | 60,000 | 40.0 | 30,000 | 60,000 | 0 | 40.0 |" in markdown
    assert "| exec | none kept up | – | – | 1,500 | 3,000 | 7 | 30.0 | 1,200 | 4,800 | 12 |" in markdown
    assert "| refused | 15,000 | 15,000 | 30,000 | 0 | 150.0 | – | no |" in markdown
    assert "| connect storm flat out (25,000 ops/s) | 201 | 20 | 200 | 12.0 / 24.0 / 25.0 | 90.0 |" in markdown
    assert ("- Idle host: ebpfguard used 0.40% of a CPU over 10 s (the same agent, before the execs; its threads "
            "woke 0.8 times a second)") in markdown
    assert "| refused | 150,000 | 6,000 | 290,000 | 0 | 35.0 | – |" in markdown  # as shipped


def test_the_readme_shows_the_storms_and_the_alert_latency_of_the_run():
    section = " ".join(render(results_markdown(full_results(storms=storm_results(),
                                                            alert_latency=alert_results()))).split())
    assert "| connect | 30,000 ops/s, flat out | 30,000 ops/s: 60,000 events/s, 0 lost, p99 40.0 ms |" in section
    assert ("| refused | 12,000 ops/s (24,000 events/s, p99 80.0 ms) | 60,000 ops/s: 150,000 events/s, 3 lost, "
            "p99 2600.0 ms | 20,000 ops/s: 80,000 events/s, 0 lost |") in section
    assert "| exec | none kept up |" in section
    assert "event p99 under 100 ms" in section
    assert ("**As shipped, storms flat out** (bulk records past 1,000 a second per sandbox and kind held back in "
            "the kernel, counted and summarised): refused 150,000 ops/s, 0 lost, 290,000 held back, event p99 "
            "35.0 ms.") in section
    assert ("**Alert latency**, miner execs from a sandbox at 20/s, syscall to alert line written: alone: p50 "
            "9.0 ms, p99 21.5 ms (201 alerts of 201 execs); during a connect storm flat out: p50 12.0 ms, p99 "
            "24.0 ms (200 alerts of 201 execs). The same agent idle: 0.40% of a CPU over 10 s, 0.8 wakeups a "
            "second.") in section


def test_a_run_without_the_storm_and_alert_phases_renders_without_them():
    section = render(results_markdown(full_results()))
    assert "Storms" not in section and "keeps up" not in section
    assert "**Alert latency**, syscall to line written: p50 7.0 ms, p99 7.0 ms." in " ".join(section.split())


def test_only_the_benchmark_sandbox_alerts_count_toward_its_alert_latency():
    window = Run("quiet", 10, 1.0, 10.0, 1e8, 1_000_000_000, 2_000_000_000)
    event = lambda sandbox: {"time": rfc3339_ns(1_500_000_000), "sandbox": {"name": sandbox}}  # noqa: E731
    lines = [(json.dumps({"kind": "alert", "event": event("sandbox-bench-1")}).encode(), 1_510_000_000),
             (json.dumps({"kind": "alert", "event": event("sandbox-test-9")}).encode(), 1_900_000_000),
             (json.dumps({"kind": "connect", **event("host")}).encode(), 1_520_000_000)]
    found = latencies_by_window(lines, [window], keep=from_sandbox_or_not_alert("sandbox-bench-1"))
    assert found["quiet"] == {"event": [20_000_000], "alert": [10_000_000]}


def test_a_cpu_model_with_parentheses_is_named_whole_in_the_readme():
    section = " ".join(render(results_markdown(full_results())).split())
    assert "2 vCPUs (Intel(R) Xeon(R) Processor), kernel 6.18.0-test, load average 0.10 at the start" in section
