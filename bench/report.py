"""Figures from a run's raw records, and the Markdown that shows them.

Every overhead figure is paired by round: a configuration's cost in round r is taken against
the no-agent baseline of the same round, then the rounds are summarized (median, min-max).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional

from bench.latency import latency_summary
from bench.stats import Summary, ratio, summarize
from bench.storms import KEEPS_UP_P99_MS, keeps_up
from bench.tracers import SHIPPED
from ebpfguard.config import load_config

BASELINE = "none"
PEERS = ("bpftrace", "auditd", "floor-unread", "floor-empty")
# Workloads whose added cost is compared across tracers (bulk is per byte, the burst is idle-padded).
COST_WORKLOADS = ("exec", "connect", "refused", "getpgid", "bulk")


def per_round(rounds: list[dict]) -> dict[str, dict[str, dict[int, dict]]]:
    """{config: {workload: {round: run}}}."""
    table: dict = defaultdict(lambda: defaultdict(dict))
    for record in rounds:
        for run in record["runs"]:
            table[record["config"]][run["workload"]][record["round"]] = run
    return table


def overhead(rounds: list[dict]) -> dict:
    """Per workload and configuration: throughput, ns/op, added ns/op and the ratio to no agent."""
    table = per_round(rounds)
    base = table.get(BASELINE, {})
    out: dict = defaultdict(dict)
    for config, workloads in table.items():
        for workload, runs in workloads.items():
            paired = [(run, base[workload][r]) for r, run in runs.items() if r in base.get(workload, {})]
            out[workload][config] = {
                "ops_per_s": _d(summarize([run["ops_per_s"] for run in runs.values()])),
                "ns_per_op": _d(summarize([run["ns_per_op"] for run in runs.values()])),
                "added_ns": _d(summarize([run["ns_per_op"] - b["ns_per_op"] for run, b in paired])),
                "ratio": _d(summarize([run["ns_per_op"] / b["ns_per_op"] for run, b in paired])),
            }
    for workload, configs in out.items():
        ours = configs.get("ebpfguard", {}).get("added_ns")
        configs.setdefault("ebpfguard", {})["vs"] = {
            peer: ratio(ours and ours["median"], configs[peer]["added_ns"] and configs[peer]["added_ns"]["median"])
            for peer in PEERS if peer in configs and configs[peer]["added_ns"]
        }
    return dict(out)


def losses_and_footprint(rounds: list[dict]) -> dict:
    """Per configuration: events lost and written, CPU after start-up, memory."""
    out: dict = {}
    for config in dict.fromkeys(r["config"] for r in rounds):
        results = [r["tracer"] for r in rounds if r["config"] == config]
        events = [t["events"] for t in results if t["events"] is not None]
        cpu = sum(t["cpu_s"] or 0 for t in results)
        out[config] = {
            "lost": None if any(t["lost"] is None for t in results) else sum(t["lost"] for t in results),
            "events": sum(events) if events else None,
            "cpu_s_per_round": _d(summarize([t["cpu_s"] for t in results if t["cpu_s"] is not None])),
            "cpu_s_per_100k_events": cpu / sum(events) * 1e5 if events and sum(events) else None,
            "peak_rss_mib": max((t["peak_rss_kib"] or 0) for t in results) / 1024,
            "rss_mib_end": max((t["rss_kib"] or 0) for t in results) / 1024,
        }
    return out


def latency(record: dict) -> dict:
    """ebpfguard's syscall-to-written latency per workload, from the latency round. Pops the
    raw lists out of its record: they are too large to keep in the JSON."""
    pooled: dict = defaultdict(lambda: {"event": [], "alert": []})
    for workload, lists in record.pop("latency_ns", {}).items():
        for kind, values in lists.items():
            pooled[workload][kind] += values
            pooled["all"][kind] += values
    order = [w for w in pooled if w != "all"] + ["all"]  # "all" last, as the total row
    return {w: {"event": latency_summary(pooled[w]["event"]), "alert": latency_summary(pooled[w]["alert"])}
            for w in order if w in pooled}


def storms(storm_results: dict) -> dict:
    """Per storm: the flat-out step, the fastest step that kept up (None when none did) and
    bpftrace's flat-out row (None without peers)."""
    out: dict = {}
    for step in storm_results["steps"]:
        figures = out.setdefault(step["workload"], {"flat_out": None, "sustained": None, "bpftrace": None})
        if not step["target_rate"]:
            figures["flat_out"] = step
        best = figures["sustained"]
        if keeps_up(step) and (best is None or step["ops_per_s"] > best["ops_per_s"]):
            figures["sustained"] = step
    for row in storm_results.get("bpftrace", []):
        out.setdefault(row["workload"], {"flat_out": None, "sustained": None, "bpftrace": None})["bpftrace"] = row
    return out


def aggregate(results: dict) -> dict:
    figures: dict = {}
    if "rounds" in results:
        rounds = results["rounds"]
        figures["overhead"] = overhead(rounds)
        figures["configs"] = losses_and_footprint(rounds)
    if "latency_round" in results:
        figures["latency"] = latency(results["latency_round"])
    if "storms" in results:
        figures["storms"] = storms(results["storms"])
    return figures


def _d(summary: Optional[Summary]) -> Optional[dict]:
    return summary.as_dict() if summary else None


def _num(value: Optional[float], fmt: str = "{:,.0f}") -> str:
    return "–" if value is None else fmt.format(value)


def _range(d: Optional[dict], fmt: str = "{:,.0f}") -> str:
    """`median (min–max)`."""
    if not d:
        return "–"
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"


def render_markdown(results: dict, figures: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    lines = [
        "# ebpfguard benchmark", "",
        f"Machine: {m['cpus']} vCPUs ({m['cpu_model']}), {m['memory_gib']} GiB, kernel {m['kernel']}; "
        f"{m['bpftrace']}; auditctl {m['auditd']}. Load average {' '.join(m['loadavg'])} at the start, "
        f"{' '.join(m.get('loadavg_end', []))} at the end; {m['bpf_programs_loaded']} BPF programs loaded "
        f"by others at the start. {s['rounds']} rounds of {s['seconds']:g} s per workload"
        f"{' (quick mode)' if s['quick'] else ''}; {m.get('minutes', '?')} minutes in all.", "",
    ]
    if "overhead" in figures:
        lines += _overhead_table(figures["overhead"], results["workloads"])
        lines += _config_table(figures["configs"])
    if "latency" in figures:
        lines += _latency_table(figures["latency"])
    if "storms" in figures:
        lines += _storms_table(figures["storms"])
        lines += _steps_table(results["storms"]["steps"])
        if results["storms"].get("shipped"):
            lines += _shipped_table(results["storms"]["shipped"])
    if "alert_latency" in results:
        lines += _alert_latency_table(results["alert_latency"])
    if "soak" in results:
        lines += ["## Footprint", "", *_footprint_lines(results["soak"]), ""]
    if "pipeline" in results:
        lines += ["## Userspace pipeline alone (recorded raw records, bench/pipeline_cpu.py)", "",
                  "| storm | events | CPU s | CPU s per 100k events |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['storm']} | {r['events']:,} | {r['cpu_s']:.2f} | {r['cpu_s_per_100k_events']:.2f} |"
                  for r in results["pipeline"]]
        lines.append("")
    if "profile" in results:
        p = results["profile"]
        lines += ["## Where ebpfguard's time goes (cProfile, connect and exec storms)", "",
                  f"{p['events']:,} events, {p['profiled_s']:.1f} s of profiled CPU (start-up included); top "
                  "functions by own time, bcc's start-up and teardown left out:", "",
                  "| function | own time | share | calls |", "| --- | --- | --- | --- |"]
        lines += [f"| `{t['function']}` | {t['tottime_s']:.2f} s | {t['share']:.0%} | {t['calls']:,} |" for t in p["top"][:10]]
        lines.append("")
    return "\n".join(lines)


def _footprint_lines(soak: dict) -> list[str]:
    lines = [f"- Idle host: ebpfguard used {soak['idle_cpu_fraction']:.2%} of a CPU over {soak['idle_s']:g} s."]
    memory = soak.get("memory")
    if memory is None:  # a run from before bench/soak.py
        return lines + [f"- After {soak['events']:,} events: RSS {soak['rss_kib_after'] / 1024:.0f} MiB, of which "
                        f"{soak['anon_rss_kib_after'] / 1024:.0f} MiB its own (RssAnon); at start "
                        f"{soak['rss_kib_start'] / 1024:.0f} MiB; peak {soak['peak_rss_kib'] / 1024:.0f} MiB "
                        f"(the start-up compile included); lost {soak['lost']}."]
    ready, highest, after = memory["ready"], memory["highest"], memory["after"]
    return lines + [
        f"- After {soak['events']:,} events (bench/soak.py: every detector on, the in-kernel rate limit off): "
        f"RSS {after['rss_mib']:.0f} MiB (PSS {after['pss_mib']:.0f}), of which {after['anon_mib']:.0f} MiB its own "
        f"(RssAnon) and {after['ring_mib']:.0f} MiB the BPF ring buffers; "
        f"at ready {ready['rss_mib']:.0f} MiB (PSS {ready['pss_mib']:.0f}); highest after ready "
        f"{highest['rss_mib']:.0f} MiB; peak {soak['peak_rss_kib'] / 1024:.0f} MiB (VmHWM, the start-up compile "
        f"included); lost {soak['lost']}; {soak['cpu_s'] / soak['events'] * 1e5:.2f} CPU s per 100k events."]


def _overhead_table(overhead: dict, workloads: list[dict]) -> list[str]:
    configs = ["none", "ebpfguard", SHIPPED, "floor-empty", "floor-unread", "bpftrace", "auditd"]
    units = {w["name"]: w["unit"] for w in workloads}
    lines = ["## Cost per operation", "",
             "Added ns per op against no agent in the same round: median (min–max) and × the no-agent time. "
             "Bulk is per byte (ns). `ebpfguard` runs with its per-cgroup rate limit off, so every record reaches "
             f"userspace; `{SHIPPED}` is the agent as shipped, whose limit holds a storm's bulk records back in "
             "the kernel (counted and summarised).", "",
             "| workload | no agent (ops/s) | " + " | ".join(c for c in configs[1:]) + " | ebpfguard's added ÷ peer's |",
             "| --- " * (len(configs) + 2) + "|"]
    for workload in COST_WORKLOADS:
        row = overhead.get(workload)
        if not row:
            continue
        fmt = "{:,.3f}" if workload == "bulk" else "{:,.0f}"
        cells = [f"{workload} ({units[workload]})", _range(row.get("none", {}).get("ops_per_s"))]
        for config in configs[1:]:
            c = row.get(config)
            cells.append(f"{_range(c['added_ns'], fmt)} ×{c['ratio']['median']:.2f}" if c and c["added_ns"] else "–")
        vs = row.get("ebpfguard", {}).get("vs", {})
        cells.append(", ".join(f"{p} {_num(v, '{:.2f}')}" for p, v in vs.items()) or "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _config_table(configs: dict) -> list[str]:
    lines = ["## Losses and footprint during the rounds", "",
             "| config | events written | lost | CPU s per round (after start-up) | CPU s per 100k events | peak RSS MiB | RSS at end MiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, c in configs.items():
        if name == BASELINE:
            continue
        lines.append(f"| {name} | {_num(c['events'])} | {_num(c['lost'])} | {_range(c['cpu_s_per_round'], '{:.2f}')} "
                     f"| {_num(c['cpu_s_per_100k_events'], '{:.2f}')} | {c['peak_rss_mib']:.0f} | {c['rss_mib_end']:.0f} |")
    return lines + [""]


def _latency_table(latency: dict) -> list[str]:
    lines = ["## ebpfguard latency: syscall (event `time`) to line written (the latency round)", "",
             "| workload | events | event p50 / p99 / max ms | alerts | alert p50 / p99 / max ms |",
             "| --- | --- | --- | --- | --- |"]
    for workload, kinds in latency.items():
        cells = [workload]
        for kind in ("event", "alert"):
            d = kinds[kind]
            cells += [_num(d.get("n", 0)), f"{d['p50_ms']:.1f} / {d['p99_ms']:.1f} / {d['max_ms']:.1f}" if d else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _ms(summary: dict, key: str) -> str:
    return _num(summary.get(key), "{:.1f}")


def _storms_table(figures: dict) -> list[str]:
    lines = ["## Storms: the highest rate ebpfguard keeps up with, and bpftrace flat out on the same storm", "",
             f"Keeps up: nothing lost and event p99 (syscall to line written) under {KEEPS_UP_P99_MS:.0f} ms. "
             "Each storm runs flat out, then at paced rates bisecting below it while ebpfguard falls behind; "
             "every step has a fresh agent (the per-cgroup rate limit off), its backlog drained before it stops. bpftrace prints a line per "
             "event (bench/peers/ebpfguard.bt; an exec is four lines there, two events here); its loss is the "
             "'Lost N events' it reports.", "",
             "| storm | ebpfguard keeps up to (ops/s) | events/s | event p99 ms "
             "| flat out with ebpfguard (ops/s) | events/s (flat out) | lost (flat out) | event p99 ms (flat out) "
             "| bpftrace flat out (ops/s) | bpftrace events/s | bpftrace lost |",
             "| --- " * 11 + "|"]
    for storm, f in figures.items():
        best, flat, peer = f["sustained"], f["flat_out"], f["bpftrace"]
        if best is None:
            cells = ["none kept up", "–", "–"]
        else:
            cells = [_num(best["ops_per_s"]) + (" (flat out)" if not best["target_rate"] else ""),
                     _num(best["events_per_s"]), _ms(best["latency"], "p99_ms")]
        cells += ([_num(flat["ops_per_s"]), _num(flat["events_per_s"]), _num(flat["lost"]), _ms(flat["latency"], "p99_ms")]
                  if flat else ["–"] * 4)
        cells += [_num(peer["ops_per_s"]), _num(peer["events_per_s"]), _num(peer["lost"])] if peer else ["–"] * 3
        lines.append(f"| {storm} | " + " | ".join(cells) + " |")
    return lines + [""]


def _shipped_table(shipped: list[dict]) -> list[str]:
    limit = load_config()["probes"]["rate_limit"]
    lines = ["## Storms flat out through the agent as shipped", "",
             f"The default config: records of the bulk kinds (socket, connect, flow) past {limit['events_per_s']:,} "
             f"a second per sandbox and kind (bursts of {limit['burst']:,}) are held back in the kernel, counted per "
             "sandbox and kind, and summarised in a `summary` event; exec records never are, nor connects to "
             "link-local (metadata) addresses.", "",
             "| storm | ops/s | events/s written | held back | lost | event p99 ms | alert p99 ms |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for step in shipped:
        lines.append(f"| {step['workload']} | {_num(step['ops_per_s'])} | {_num(step['events_per_s'])} "
                     f"| {_num(step['held_back'])} | {_num(step['lost'])} | {_ms(step['latency'], 'p99_ms')} "
                     f"| {_ms(step['alert_latency'], 'p99_ms')} |")
    return lines + [""]


def _steps_table(steps: list[dict]) -> list[str]:
    lines = ["## Storm steps: ebpfguard at each rate tried", "",
             "| storm | target ops/s | achieved ops/s | events/s written | lost | event p99 ms | alert p99 ms | keeps up |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for step in steps:
        lines.append(f"| {step['workload']} | {_num(step['target_rate']) if step['target_rate'] else 'max'} "
                     f"| {_num(step['ops_per_s'])} | {_num(step['events_per_s'])} | {step['lost']} "
                     f"| {_ms(step['latency'], 'p99_ms')} | {_ms(step['alert_latency'], 'p99_ms')} "
                     f"| {'yes' if keeps_up(step) else 'no'} |")
    return lines + [""]


def _alert_latency_table(alerts: dict) -> list[str]:
    lines = ["## Alert latency: miner execs from a sandbox, syscall (event `time`) to alert line written", "",
             "One agent, the per-cgroup rate limit off (every record of the storm reaches it).", "",
             "| load | execs | rate /s | alerts | alert p50 / p99 / max ms | event p99 ms (every event in the window) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in alerts["rows"]:
        load = row["load"] + (f" ({_num(row['storm_ops_per_s'])} ops/s)" if row.get("storm_ops_per_s") else "")
        lines.append(f"| {load} | {_num(row['execs'])} | {row['rate']} | {_num(row['alerts'])} "
                     f"| {_triple(row['alert_latency'])} | {_ms(row['event_latency'], 'p99_ms')} |")
    woke = alerts.get("idle_wakeups_per_s")
    lines += ["", f"- Idle host: ebpfguard used {alerts['idle_cpu_fraction']:.2%} of a CPU over {alerts['idle_s']:g} s "
                  f"(the same agent, before the execs{f'; its threads woke {woke:.1f} times a second' if woke is not None else ''}); "
                  f"lost {alerts['lost']} over the phase.", ""]
    return lines


def _triple(summary: dict) -> str:
    """'p50 / p99 / max' in ms, or '–' when there were none."""
    return f"{summary['p50_ms']:.1f} / {summary['p99_ms']:.1f} / {summary['max_ms']:.1f}" if summary else "–"
