"""A sandbox's verdict and timeline, from its history: as JSON (a contract), text and Markdown.

JSON shape (what `ebpfguard report --format json` prints and `client.verdict()` returns):
`{"sandbox", "verdict": "clean"|"flagged", "rules": [{"rule", "severity", "count"}],
"alerts": [...], "actions": [...], "processes": [...], "connections": [...], "dns": [...],
"first_time", "last_time", "live_processes", "evicted": {what: count}}`.
A sandbox is `flagged` when any alert names it, `clean` otherwise.
"""

from __future__ import annotations

from typing import Any, Optional

from ebpfguard.outputs.history import SandboxRecord
from ebpfguard.watch.format import safe

SEVERITY_ORDER = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


def build_report(record: SandboxRecord) -> dict:
    """The report of one sandbox's history (plain JSON types only)."""
    alerts = sorted(record.alerts.values(), key=lambda a: str(a.get("time") or ""))
    rules: dict[str, dict] = {}
    for alert in alerts:
        entry = rules.setdefault(alert["rule"], {"rule": alert["rule"], "severity": alert["severity"], "count": 0})
        entry["count"] += 1
        if SEVERITY_ORDER.get(alert["severity"], 0) > SEVERITY_ORDER.get(entry["severity"], 0):
            entry["severity"] = alert["severity"]
    names = {address: sorted(found) for address, found in record.names.items()}
    connections = []
    for entry in record.connections.values():
        connections.append({**entry, "names": names.get(entry["daddr"], [])})
    return {
        "sandbox": record.name,
        "verdict": "flagged" if alerts else "clean",
        "rules": sorted(rules.values(), key=lambda r: (-SEVERITY_ORDER.get(r["severity"], 0), r["rule"])),
        "alerts": alerts,
        "actions": sorted(record.actions.values(), key=lambda a: str(a.get("time") or "")),
        "processes": sorted(record.processes.values(), key=lambda p: (str(p.get("first_time") or ""), p["pid"])),
        "connections": connections,
        "dns": [{"query": query, "count": count} for query, count in record.queries.items()],
        "first_time": record.first_time,
        "last_time": record.last_time,
        "live_processes": len(record.live),
        "evicted": dict(record.evicted),
    }


def summary_line(report: dict) -> str:
    """`NAME: clean` or `NAME: FLAGGED — rule (severity) ×n, ...`."""
    if report["verdict"] == "clean":
        return f"{safe(report['sandbox'])}: clean"
    fired = ", ".join(f"{safe(r['rule'])} ({r['severity']}) ×{r['count']}" for r in report["rules"])
    return f"{safe(report['sandbox'])}: FLAGGED — {fired}"


def _image_text(image: dict, comm: object) -> str:
    argv = image.get("argv") or []
    text = " ".join(safe(a) for a in argv) if argv else f"[{safe(comm)}]"
    return text + (" …" if image.get("argv_cut") else "")


def _command(process: dict) -> str:
    """Its command line; a process that exec'd again shows each image kept, in order."""
    images = process.get("images") or [process]
    return " ⇒ ".join(_image_text(image, process.get("comm")) for image in images)


def process_tree(processes: list[dict]) -> list[tuple[int, dict]]:
    """(depth, process) in tree order: each process under its parent where the parent is one
    of the sandbox's own, roots (started from outside the sandbox) in time order."""
    by_pid = {p["pid"]: p for p in processes}
    children: dict[Any, list[dict]] = {}
    for p in processes:
        parent = p.get("ppid") if p.get("ppid") in by_pid and p.get("ppid") != p["pid"] else None
        children.setdefault(parent, []).append(p)
    out: list[tuple[int, dict]] = []
    seen: set = set()
    stack = [(0, p) for p in reversed(children.get(None, []))]
    while stack:
        depth, p = stack.pop()
        if p["pid"] in seen:
            continue
        seen.add(p["pid"])
        out.append((depth, p))
        stack.extend((depth + 1, c) for c in reversed(children.get(p["pid"], [])))
    out.extend((0, p) for p in processes if p["pid"] not in seen)  # a parent cycle: still listed
    return out


def _destination_text(c: dict) -> str:
    names = ", ".join(safe(n) for n in c.get("names") or [])
    where = f"{safe(c['daddr'])}:{c['dport']}"
    extra = [f"names: {names}"] if names else []
    if c.get("sni"):
        extra.append(f"sni: {safe(c['sni'])}")
    counts = f"{c['connects']} connects, {c['flows']} flows" + (f", {c['failed']} failed" if c.get("failed") else "")
    return f"{where}  ({'; '.join(extra + [counts])})"


def _timeline(report: dict) -> list[tuple[str, str, str]]:
    rows = [(str(a.get("time") or ""), "alert",
             f"{a['severity']} {safe(a['rule'])}: {safe(a.get('summary'))} "
             f"(pid {a['process'].get('pid')} {safe(a['process'].get('comm'))})") for a in report["alerts"]]
    rows += [(str(a.get("time") or ""), "action",
              f"{safe(a.get('action'))} for {safe(a.get('rule'))}: {safe(a.get('outcome'))}"
              + (f" ({safe(a.get('reason'))})" if a.get("reason") else "")) for a in report["actions"]]
    return sorted(rows)


def render_text(report: dict) -> str:
    """For a terminal: every value escaped as the viewer escapes it."""
    lines = [summary_line(report), ""]
    lines.append(f"seen {report['first_time'] or '?'} … {report['last_time'] or '?'}, "
                 f"{report['live_processes']} live processes")
    lines += ["", "Processes:"]
    for depth, p in process_tree(report["processes"]):
        state = f" (exit {p['exit_code']})" if p.get("exited") and p.get("exit_code") is not None else ""
        lines.append(f"  {'  ' * depth}{'└─ ' if depth else ''}{p['pid']} {_command(p)}{state}")
    lines += ["", "Network:"]
    lines += [f"  {_destination_text(c)}" for c in report["connections"]] or ["  (none)"]
    if report["dns"]:
        lines.append("  DNS: " + ", ".join(safe(d["query"]) for d in report["dns"]))
    lines += ["", "Alerts and actions:"]
    lines += [f"  {when}  {what:<6}  {text}" for when, what, text in _timeline(report)] or ["  (none)"]
    if report["evicted"]:
        lines += ["", "Not kept (history bounds): " + ", ".join(f"{k} {v}" for k, v in sorted(report["evicted"].items()))]
    return "\n".join(lines) + "\n"


def _md(value: Optional[Any]) -> str:
    """A value for a Markdown table cell: escaped, pipes and backticks neutralised."""
    return safe(value).replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`").replace("*", "\\*").replace("_", "\\_")


def render_markdown(report: dict) -> str:
    """For an incident ticket."""
    verdict = "**FLAGGED**" if report["verdict"] == "flagged" else "clean"
    out = [f"## ebpfguard report: {_md(report['sandbox'])}", "", f"Verdict: {verdict}", ""]
    if report["rules"]:
        out += ["| rule | severity | alerts |", "|---|---|---|"]
        out += [f"| {_md(r['rule'])} | {r['severity']} | {r['count']} |" for r in report["rules"]]
        out.append("")
    out += ["### Timeline", "", "| time | what | detail |", "|---|---|---|"]
    out += [f"| {_md(when)} | {what} | {_md(text)} |" for when, what, text in _timeline(report)]
    out += ["", "### Processes", "", "| pid | parent | command |", "|---|---|---|"]
    out += [f"| {p['pid']} | {p.get('ppid')} | {'&nbsp;&nbsp;' * depth}{_md(_command(p))} |"
            for depth, p in process_tree(report["processes"])]
    out += ["", "### Network", "", "| destination | names | connects | flows |", "|---|---|---|---|"]
    out += [f"| {_md(c['daddr'])}:{c['dport']} | {_md(', '.join(c.get('names') or []))} | {c['connects']} | {c['flows']} |"
            for c in report["connections"]]
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown}
