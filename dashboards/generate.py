"""The ebpfguard overview dashboard, as code (grafana-foundation-sdk).

    python dashboards/generate.py          rewrite dashboards/ebpfguard-overview.json
    python dashboards/generate.py --check  exit 1 if the committed JSON is not what this makes

Panels use the recording rules of prometheus/ebpfguard.rules.yml where one exists, so load
those rules into the Prometheus that Grafana reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common as common_builders, dashboard, prometheus
from grafana_foundation_sdk.builders import stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync, DataSourceRef, Threshold, ThresholdsMode, VariableRefresh, VariableSort,
)

OUTPUT = Path(__file__).with_name("ebpfguard-overview.json")
UID = "ebpfguard-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SANDBOX = 'sandbox=~"$sandbox"'
FULL_WIDTH = 24


def query(expr: str, legend: str = "", ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)


def graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
          width: int = 12, stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).min(0).height(8).span(width).fill_opacity(10)
             .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True)))
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def red_above(limit: float) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
        Threshold(value=None, color="green"), Threshold(value=limit, color="red"),
    ])


def big_number(title: str, description: str, expr: str, limit: float, width: int = 6) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE)
            .with_target(query(expr)).height(4).span(width).thresholds(red_above(limit))
            .color_mode(common.BigValueColorMode.BACKGROUND).graph_mode(common.BigValueGraphMode.NONE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"])))


def build() -> dashboard.Dashboard:
    """The overview dashboard: alerts, sandboxes, event rates, losses, latency, probe health."""
    return (
        dashboard.Dashboard("ebpfguard overview")
        .uid(UID)
        .description("Sandboxed AI agents on each host, seen from the kernel: alerts, activity, and "
                     "whether the agent sees everything.")
        .tags(["ebpfguard", "security"])
        .refresh("30s")
        .time("now-6h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("sandbox").label("Sandbox").datasource(DATASOURCE)
            .query("label_values(ebpfguard_events_total, sandbox)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*"))
        .with_row(dashboard.Row("Alerts"))
        .with_panel(big_number(
            "Alerts (5m)", "Alerts raised by the agents in the last 5 minutes, every rule.",
            f"sum(ebpfguard:alerts:increase5m{{{SANDBOX}}}) or vector(0)", 1))
        .with_panel(big_number(
            "Sandboxes with a live process", "Sandboxes in which a process is running now, all hosts.",
            "sum(ebpfguard_sandboxes) or vector(0)", 1e9))
        .with_panel(big_number(
            "Agents up", "Agents Prometheus can scrape, of those it should.",
            'sum(up{job="ebpfguard"}) or vector(0)', 1e9))
        .with_panel(big_number(
            "Probe families down", "Probe families not attached, all agents: their events are unseen.",
            "count(ebpfguard_probe_up == 0) or vector(0)", 1))
        .with_panel(graph(
            "Alerts by rule and sandbox", "Alerts per 5 minutes (a sandbox's first alert included).",
            "short",
            query(f"sum by (rule, sandbox) (ebpfguard:alerts:increase5m{{{SANDBOX}}})", "{{rule}} {{sandbox}}"),
            width=16, stacked=True))
        .with_panel(
            bargauge.Panel().title("Top sandboxes by alerts")
            .description("Alerts since each agent started, ten sandboxes with the most.")
            .datasource(DATASOURCE).height(8).span(8)
            .with_target(query(f"topk(10, sum by (sandbox) (ebpfguard_alerts_total{{{SANDBOX}}}))", "{{sandbox}}")
                         .instant())
            .display_mode(common.BarGaugeDisplayMode.BASIC).orientation(common.VizOrientation.HORIZONTAL)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"])))
        .with_row(dashboard.Row("Activity"))
        .with_panel(graph(
            "Events by kind", "Events per second written by the agents (alerts not included).", "ops",
            query(f"sum by (kind) (rate(ebpfguard_events_total{{{SANDBOX}}}[$__rate_interval]))", "{{kind}}"),
            stacked=True))
        .with_panel(graph(
            "Top sandboxes by event rate", "The ten busiest sandboxes, events per second.", "ops",
            query(f"topk(10, sum by (sandbox) (rate(ebpfguard_events_total{{{SANDBOX}}}[$__rate_interval])))",
                  "{{sandbox}}")))
        .with_row(dashboard.Row("Agent health"))
        .with_panel(graph(
            "Events lost or dropped",
            "Lost: the kernel ring buffer was full. Dropped: userspace could not handle or write them. "
            "Either means activity may be unseen.", "ops",
            query("sum by (instance, probe) (rate(ebpfguard_events_lost_total[$__rate_interval]))",
                  "lost {{probe}} {{instance}}", "A"),
            query("sum by (instance, stage, reason) (rate(ebpfguard_events_dropped_total[$__rate_interval]))",
                  "dropped {{stage}}/{{reason}} {{instance}}", "B"),
            width=8))
        .with_panel(graph(
            "Pipeline latency", "Kernel timestamp to event written, quantiles over 5 minutes.", "s",
            query("max by (instance) (ebpfguard:pipeline_latency_seconds:p50_5m)", "p50 {{instance}}", "A"),
            query("max by (instance) (ebpfguard:pipeline_latency_seconds:p99_5m)", "p99 {{instance}}", "B"),
            width=8))
        .with_panel(
            statetimeline.Panel().title("Probe health")
            .description("1 while a probe family is attached; 0 (red) while it is not.")
            .datasource(DATASOURCE).height(8).span(8).show_value(common.VisibilityMode.NEVER).thresholds(
                dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
                    Threshold(value=None, color="red"), Threshold(value=1, color="green")]))
            .with_target(query("min by (instance, probe) (ebpfguard_probe_up)", "{{probe}} {{instance}}")))
        .with_panel(graph(
            "Seconds since the last event",
            "Per agent. A host always runs something: a line that keeps climbing is an agent that is "
            "stalled or blinded (alert EbpfguardAgentStalled after 10 minutes).", "s",
            query("time() - max by (instance) (ebpfguard_last_event_timestamp_seconds)", "{{instance}}"),
            width=12))
        .with_panel(
            statetimeline.Panel().title("Probes still attached")
            .description("1 while every program of a probe family is still attached where the agent attached "
                         "it (checked every second); 0 (red) once one was detached.")
            .datasource(DATASOURCE).height(8).span(12).show_value(common.VisibilityMode.NEVER).thresholds(
                dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
                    Threshold(value=None, color="red"), Threshold(value=1, color="green")]))
            .with_target(query("min by (instance, probe) (ebpfguard_probe_attached)", "{{probe}} {{instance}}")))
    )


def render() -> str:
    """The dashboard as Grafana JSON (stable: sorted keys, two-space indent, final newline)."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
