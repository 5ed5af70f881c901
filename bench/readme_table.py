"""The README's "Cost" section, rendered from the last benchmark run (bench/RESULTS.md).

    python -m bench.readme_table           # print the section
    python -m bench.readme_table --write   # put it in README.md, between its markers

tests/unit/test_readme.py checks that README.md holds exactly what this renders, so the
README cannot drift from the committed results. Noise is shown as noise: an added cost whose
range over the rounds crosses zero is "within noise", never a figure.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ebpfguard.config import load_config

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
README = REPO / "README.md"
BEGIN = "<!-- cost: rendered by bench/readme_table.py from bench/RESULTS.md; edit those, not this -->"
END = "<!-- end cost -->"

# Configurations in RESULTS.md -> the README's column headings, in the README's order.
COLUMNS = {
    "ebpfguard": "ebpfguard, rate limit off",
    "ebpfguard-shipped": "ebpfguard as shipped",
    "floor-unread": "probes, ring unread",
    "floor-empty": "probes, empty",
    "bpftrace": "bpftrace",
    "auditd": "auditd",
}
PEERS = ("bpftrace", "auditd")
# ... and in prose, for the comparisons.
WHOSE = {"bpftrace": "bpftrace's", "auditd": "auditd's", "floor-unread": "the unread-ring floor's"}
NOISE = "within noise"
WIDTH = 100  # the README's line width

# "11,490 (-32,284–63,276) ×1.02": median (min–max over the rounds) × the no-agent time.
_COST = re.compile(r"^(-?[\d,.]+) \((-?[\d,.]+)–(-?[\d,.]+)\)(?: ×([\d.]+))?$")


@dataclass(frozen=True)
class Cost:
    """Added time per operation (ns; per byte for bulk) over the rounds."""

    median: float
    low: float
    high: float
    ratio: Optional[float]

    @property
    def noise(self) -> bool:
        """The rounds disagree on the sign: no added cost can be claimed."""
        return self.low <= 0 <= self.high


def parse_cost(cell: str) -> Cost:
    """A cell of RESULTS.md's cost table."""
    found = _COST.match(cell.strip())
    if not found:
        raise ValueError(f"not a cost cell: {cell!r}")
    median, low, high, ratio = found.groups()
    number = lambda text: float(text.replace(",", ""))  # noqa: E731
    return Cost(number(median), number(low), number(high), float(ratio) if ratio else None)


def sections(markdown: str) -> dict[str, list[str]]:
    """The lines under each `## heading`."""
    out: dict[str, list[str]] = {}
    current = ""
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def table(lines: list[str]) -> list[dict[str, str]]:
    """The first Markdown table among `lines`, as rows keyed by column heading."""
    rows = [line for line in lines if line.startswith("|")]
    if len(rows) < 2:
        return []
    cells = lambda row: [c.strip() for c in row.strip().strip("|").split("|")]  # noqa: E731
    head = cells(rows[0])
    return [dict(zip(head, cells(row))) for row in rows[2:]]


def section(all_sections: dict[str, list[str]], prefix: str, required: bool = True) -> list[str]:
    """The section whose heading starts with `prefix` (headings carry explanations after a colon);
    an optional one that is missing (a run from before it existed, or without that phase) is []."""
    for heading, lines in all_sections.items():
        if heading.startswith(prefix):
            return lines
    if not required:
        return []
    raise KeyError(f"RESULTS.md has no section '{prefix}...'")


def added(cost: Cost, per_byte: bool) -> str:
    """An added cost for the README: '+5.9 µs ×1.18', or 'within noise'."""
    if cost.noise:
        return NOISE
    if per_byte:
        text = f"{cost.median:+.3f} ns/byte"
    elif abs(cost.median) >= 100_000:
        text = f"{cost.median / 1000:+,.0f} µs"
    elif abs(cost.median) >= 1000:
        text = f"{cost.median / 1000:+.1f} µs"
    else:
        text = f"{cost.median:+,.0f} ns"
    text = text.replace("-", "−")
    return f"{text} ×{cost.ratio:.2f}" if cost.ratio is not None else text


def rate(cell: str, per_byte: bool) -> str:
    """A no-agent rate: '30,353/s', '3.2 M/s', '2.1 GB/s'."""
    value = float(cell.split(" (")[0].replace(",", ""))
    if per_byte:
        return f"{value / 1e9:.1f} GB/s"
    if value >= 1e6:
        return f"{value / 1e6:.1f} M/s"
    return f"{value:,.0f}/s"


def machine_line(markdown: str) -> str:
    """'2 vCPUs (AMD EPYC), kernel 6.18...; load average 0.83 at the start' from RESULTS.md."""
    # The CPU model may hold parentheses itself: "2 vCPUs (Intel(R) Xeon(R) Processor)".
    found = re.search(r"^Machine: (.+?), [\d.]+ GiB, kernel (\S+?);.*?Load average (\S+)", markdown, re.M)
    if not found:
        raise ValueError("RESULTS.md has no 'Machine:' line")
    cpus, kernel, load = found.groups()
    rounds = re.search(r"(\d+) rounds of ([\d.]+ s) per workload", markdown)
    detail = f"{rounds.group(1)} rounds of {rounds.group(2)} per workload" if rounds else "the rounds"
    return f"{cpus}, kernel {kernel}, load average {load} at the start; {detail}"


def cost_rows(costs: list[dict[str, str]]) -> tuple[list[str], dict[str, dict[str, Cost]]]:
    """The README's cost table, and the parsed costs by workload and configuration."""
    columns = [c for c in COLUMNS if c in costs[0]]
    lines = ["| workload | no agent | " + " | ".join(COLUMNS[c] for c in columns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    parsed: dict[str, dict[str, Cost]] = {}
    for row in costs:
        workload = row["workload"]
        per_byte = "(byte)" in workload
        parsed[workload] = {c: parse_cost(row[c]) for c in columns}
        cells = [added(parsed[workload][c], per_byte) for c in columns]
        lines.append(f"| {workload} | {rate(row['no agent (ops/s)'], per_byte)} | " + " | ".join(cells) + " |")
    return lines, parsed


def comparisons(parsed: dict[str, dict[str, Cost]]) -> list[str]:
    """ebpfguard's added cost against each peer's and its own floor's, per workload, only
    where neither side is noise."""
    out = []
    for workload, costs in parsed.items():
        ours = costs.get("ebpfguard")
        if ours is None or ours.noise or ours.median <= 0:
            continue
        pairs = [f"{ours.median / costs[other].median:.2f}× {WHOSE[other]}"
                 for other in WHOSE if other in costs
                 and not costs[other].noise and costs[other].median > 0]
        if pairs:
            out.append(f"{workload.split(' (')[0]} {', '.join(pairs)}")
    return out


def storm_rows(storms: list[dict[str, str]]) -> list[str]:
    """The README's storms table from RESULTS.md's: per storm the highest rate ebpfguard keeps
    up with, and the storm flat out with ebpfguard and with bpftrace."""
    lines = ["| storm | ebpfguard keeps up to | flat out with ebpfguard | flat out with bpftrace |",
             "| --- | --- | --- | --- |"]
    for row in storms:
        keeps = row["ebpfguard keeps up to (ops/s)"]
        if keeps.endswith("(flat out)"):
            keeps = f"{keeps.split(' ')[0]} ops/s, flat out"
        elif keeps[:1].isdigit():
            keeps = f"{keeps} ops/s ({row['events/s']} events/s, p99 {row['event p99 ms']} ms)"
        ours = (f"{row['flat out with ebpfguard (ops/s)']} ops/s: {row['events/s (flat out)']} events/s, "
                f"{row['lost (flat out)']} lost, p99 {row['event p99 ms (flat out)']} ms")
        peer = (f"{row['bpftrace flat out (ops/s)']} ops/s: {row['bpftrace events/s']} events/s, "
                f"{row['bpftrace lost']} lost" if row["bpftrace flat out (ops/s)"] != "–" else "–")
        lines.append(f"| {row['storm']} | {keeps} | {ours} | {peer} |")
    return lines


def alert_bullets(rows: dict[str, dict[str, str]], notes: list[str]) -> list[str]:
    """Alert latency alone and under the storm, and the agent's idle CPU, from RESULTS.md's
    Alert latency section (its table, and the bullets under it)."""
    parts = []
    for load, row in rows.items():
        p50, p99, _ = row["alert p50 / p99 / max ms"].split(" / ")
        where = "alone" if load == "none" else f"during a {load}"
        parts.append(f"{where}: p50 {p50} ms, p99 {p99} ms ({row['alerts']} alerts of {row['execs']} execs)")
    rate = next(iter(rows.values()))["rate /s"]
    idle = next((m for m in map(re.compile(r"used (\S+) of a CPU over (\S+ s)").search, notes) if m), None)
    woke = next((m for m in map(re.compile(r"its threads woke (\S+) times a second").search, notes) if m), None)
    return [f"**Alert latency**, miner execs from a sandbox at {rate}/s, syscall to alert line written: "
            f"{'; '.join(parts)}." + (f" The same agent idle: {idle.group(1)} of a CPU over {idle.group(2)}"
                                      + (f", {woke.group(1)} wakeups a second." if woke else ".")
                                      if idle else "")]


def shipped_bullet(rows: list[dict[str, str]]) -> str:
    """The storms flat out through the agent as shipped, in a sentence."""
    parts = [f"{row['storm']} {row['ops/s']} ops/s, {row['lost']} lost, {row['held back']} held back, "
             f"event p99 {row['event p99 ms']} ms" for row in rows]
    limit = load_config()["probes"]["rate_limit"]["events_per_s"]
    return (f"**As shipped, storms flat out** (bulk records past {limit:,} a second per sandbox and kind held "
            f"back in the kernel, counted and summarised): {'; '.join(parts)}.")


def render(markdown: str) -> str:
    """The README's Cost section (markers included) for a RESULTS.md."""
    all_sections = sections(markdown)
    cost_lines = section(all_sections, "Cost per operation")
    costs = table(cost_lines)
    losses = {row["config"]: row for row in table(section(all_sections, "Losses and footprint"))}
    latency = {row["workload"]: row for row in table(section(all_sections, "ebpfguard latency"))}
    ramp = [line[2:] for line in section(all_sections, "Ramp", required=False) if line.startswith("- ")]
    storm_section = section(all_sections, "Storms", required=False)
    storms = table(storm_section)
    alert_section = section(all_sections, "Alert latency", required=False)
    shipped = table(section(all_sections, "Storms flat out through the agent as shipped", required=False))
    footprint = [line[2:] for line in section(all_sections, "Footprint") if line.startswith("- ")]
    cost_table, parsed = cost_rows(costs)
    ours = losses["ebpfguard"]
    if alert_section:
        alert_lines = alert_bullets({row["load"].split(" (")[0]: row for row in table(alert_section)},
                                    [line[2:] for line in alert_section if line.startswith("- ")])
    else:
        alerts = latency["all"]["alert p50 / p99 / max ms"].split(" / ")
        alert_lines = [f"**Alert latency**, syscall to line written: p50 {alerts[0]} ms, p99 {alerts[1]} ms."]
    bullets = [
        f"**Lost**: {ours['lost']} of {ours['events written']} events written in the rounds; "
        f"{ours['CPU s per 100k events']} CPU s per 100k events"
        + (" (the rate limit off: a flat-out storm outruns the pipeline and the bulk ring overflows, "
           "counted; shipped, the limit holds a storm back in the kernel and summarises it)."
           if "rate limit off" in " ".join(cost_lines) else "."),
        *[f"**Paced storms**: {line}" for line in ramp],
        *([shipped_bullet(shipped)] if shipped else []),
        *alert_lines,
        *[f"**Footprint**: {line}" for line in footprint],
    ]
    storm_lines = []
    if storms:
        found = re.search(r"event p99 \(syscall to line written\) under (\d+) ms", " ".join(storm_section))
        bound = found.group(1) if found else "?"
        storm_lines = ["", *wrap("Storms, the rate limit off: the highest rate ebpfguard keeps up with (nothing lost, "
                                 f"event p99 under {bound} ms from syscall to line written), and each storm "
                                 "flat out with ebpfguard and with bpftrace (a line per event):"),
                       "", *storm_rows(storms)]
    compared = comparisons(parsed)
    if compared:
        bullets.append(f"**ebpfguard's added time against the others'** (where neither is noise): "
                       f"{'; '.join(compared)}.")
    return "\n".join([
        BEGIN,
        *wrap("`make bench` measures overhead, throughput, latency and footprint, alternating "
              "configurations in the same run, side by side with bpftrace and auditd on the same "
              "hooks and with our own floors (the same hooks with empty bodies; the real probes "
              "writing to a ring buffer nobody reads): [bench/README.md](bench/README.md)."),
        "",
        *wrap(f"Latest full run ([bench/RESULTS.md](bench/RESULTS.md)): {machine_line(markdown)}. "
              "Added time per operation against no agent in the same round (median over the "
              f"rounds) and the ratio to no agent; *{NOISE}* where the rounds' range crosses zero."),
        "",
        *cost_table,
        *storm_lines,
        "",
        *[line for bullet in bullets for line in wrap(bullet, bullet=True)],
        END,
    ])


def wrap(text: str, bullet: bool = False) -> list[str]:
    """A paragraph, or a list item, folded at the README's width."""
    if bullet:
        return textwrap.wrap(text, WIDTH, initial_indent="- ", subsequent_indent="  ", break_on_hyphens=False)
    return textwrap.wrap(text, WIDTH, break_on_hyphens=False)


def readme_section(readme: str) -> str:
    """What README.md holds between the markers (markers included)."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
    return readme[start:end + len(END)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the section in README.md")
    args = parser.parse_args()
    rendered = render(RESULTS.read_text())
    if not args.write:
        print(rendered)
        return 0
    readme = README.read_text()
    README.write_text(readme.replace(readme_section(readme), rendered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
