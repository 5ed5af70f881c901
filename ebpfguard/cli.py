"""Command line: a thin layer over the library (`ebpfguard --help`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

import click

from ebpfguard import __version__
from ebpfguard.client import DEFAULT_CONTROL_SOCKET
from ebpfguard.config import ConfigError, load_config

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
HEAP_TRIM_INTERVAL_S = 10.0  # docs/performance.md, Memory


def fail(message: str) -> None:
    """Print one clear error line and exit 2 (usage or config error)."""
    click.echo(f"ebpfguard: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def config_or_fail(path: Optional[Path]) -> dict:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), envvar="EBPFGUARD_CONFIG",
    metavar="FILE", help="YAML overlaid on the embedded default configuration.")

if TYPE_CHECKING:
    from ebpfguard.agent import Agent
    from ebpfguard.detect.rulefile import RuleSet
    from ebpfguard.outputs.metrics import MetricsServer


def socket_option(help_text: str):
    """--socket PATH, shared by the agent (serves) and the viewer (connects)."""
    from ebpfguard.outputs.eventsocket import DEFAULT_SOCKET

    return click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
                        envvar="EBPFGUARD_SOCKET", metavar="PATH", help=help_text)


def control_socket_option(help_text: str):
    """--control-socket PATH: the agent serves `actions` and other requests there."""
    from ebpfguard.client import DEFAULT_CONTROL_SOCKET

    return click.option("--control-socket", "control_path", default=DEFAULT_CONTROL_SOCKET, show_default=True,
                        envvar="EBPFGUARD_CONTROL_SOCKET", metavar="PATH", help=help_text)


rules_option = click.option(
    "--rules", "rule_files", multiple=True, metavar="FILE", envvar="EBPFGUARD_RULES",
    type=click.Path(dir_okay=False, path_type=Path), help="Rules file extending the shipped rules (repeatable).",
)


def _load_rules_or_exit(rule_files: tuple[Path, ...], host_lists: Optional[dict] = None) -> RuleSet:
    from ebpfguard.detect.engine import RulesError, load_rules

    try:
        return load_rules(rule_files, host_lists)
    except RulesError as problems:
        click.echo(str(problems), err=True)
        sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ebpfguard")
def main() -> None:
    """ebpfguard: catch rogue sandboxed AI agents (miners, reverse tunnels) from the kernel."""


def _metrics_address(_ctx: click.Context, _param: click.Parameter, value: str) -> Optional[tuple[str, int]]:
    from ebpfguard.outputs.metrics import MetricsAddressError, parse_address

    try:
        return parse_address(value)
    except MetricsAddressError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@config_option
@rules_option
@click.option("--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Append events to FILE instead of stdout (each line flushed within 100 ms).")
@socket_option("Serve events to viewers (`ebpfguard watch`) on PATH, mode 0600; `none` disables.")
@control_socket_option("Serve control requests on PATH (`ebpfguard actions`, root only; `report` and the runner client, for root and the config's clients.allow); `none` disables.")
@click.option("--metrics-addr", "metrics_address", default="127.0.0.1:9477", show_default=True,
              envvar="EBPFGUARD_METRICS_ADDR", metavar="HOST:PORT", callback=_metrics_address,
              help="Serve Prometheus metrics on http://HOST:PORT/metrics; 'none' disables it.")
@click.option("--ebpf", is_flag=True, hidden=True, help="Print the BPF program and its flags, then exit.")
def run(config_path: Optional[Path], rule_files: tuple[Path, ...], output: Optional[str], socket_path: str,
        control_path: str, metrics_address: Optional[tuple[str, int]], ebpf: bool) -> None:
    """Run the agent: events and alerts as JSON Lines on stdout, logs on stderr.

    Prints `ready` on stderr once every probe is attached; SIGINT or SIGTERM detach them all.
    """
    from ebpfguard.kernel.capabilities import missing_here
    from ebpfguard.detect.config import DetectConfigError
    from ebpfguard.detect.engine import DetectionEngine
    from ebpfguard.detect.filereader import live_files
    from ebpfguard.outputs.stats import PipelineStats
    from ebpfguard.doctor import check_kernel_headers
    from ebpfguard.enrich.hostnet import host_addresses
    from ebpfguard.kernel.load import ProbeError, compile_flags, program_text, tracefs_root
    from ebpfguard.enrich.sandbox import cgroup_root_from_proc, validate_matchers
    from ebpfguard.kernel.footprint import keep_heap_trimmed, one_malloc_arena

    one_malloc_arena()  # before the first thread
    keep_heap_trimmed(HEAP_TRIM_INTERVAL_S)
    config = config_or_fail(config_path)
    stats = PipelineStats()
    try:
        validate_matchers(config["sandbox"]["matchers"])
        rules = _load_rules_or_exit(rule_files, {"host_addresses": host_addresses()})
        engine = DetectionEngine(rules, config["detect"], read_file=live_files(config["limits"], stats.overrun))
    except (ValueError, DetectConfigError) as exc:
        fail(f"{config_path or 'default config'}: {exc}")
    response = _response_or_fail(config, rules, config_path)
    if ebpf:
        click.echo(f"// cflags: {' '.join(compile_flags(config, tracefs_root() or '/sys/kernel/tracing'))}")
        click.echo(program_text())
        return
    missing = missing_here()
    if missing:
        fail("not enough privileges to run the agent: missing "
             + ", ".join(f"{cap} (to {why})" for cap, why in missing.items())
             + "; run as root or grant them")
    cgroup_root = cgroup_root_from_proc()
    if cgroup_root is None:
        fail("no cgroup2 filesystem is mounted (see `ebpfguard doctor`)")
    headers = check_kernel_headers()
    if not headers.ok or not headers.detail.startswith("exact"):
        click.echo(f"ebpfguard: warning: kernel headers: {headers.detail}", err=True)
    from ebpfguard.agent import Agent
    from ebpfguard.outputs.eventsocket import SocketBusy

    logging.basicConfig(format="ebpfguard: %(levelname)s: %(message)s", level=logging.WARNING)
    try:
        agent = Agent(config, output, cgroup_root, detect=engine.process, detects=engine.detects,
                      detect_may_wait=engine.may_read_files,
                      socket_path=None if socket_path == "none" else socket_path, late_alerts=engine.poll,
                      late_pending=engine.late_pending,
                      response=response, control_path=None if control_path == "none" else control_path,
                      stats=stats)
    except SocketBusy as exc:
        fail(f"{exc} (stop it, or give this agent another --socket or --control-socket)")
    except OSError as exc:
        fail(f"cannot open {exc.filename or output}: {exc.strerror}")
    except ValueError as exc:  # an output's settings went bad since the config was read
        fail(f"{config_path}: {exc}")
    # The executable scanner's verdicts wake the detection worker to collect their alerts.
    engine.wake_on_late(agent.wake_for_late_alerts)
    engine.see_processes(agent.pipeline.enricher.procs.image_holder)
    server = None if metrics_address is None else _serve_metrics(agent, *metrics_address)
    try:
        agent.run()
    except ProbeError as exc:
        fail(str(exc))
    finally:
        if server is not None:
            server.close()
    # Everything is detached, flushed and closed by now. The interpreter's own teardown took
    # ~0.4 s more on a busy host: leave at once, so SIGTERM stops the agent within a second.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


def _response_or_fail(config: dict, rules: "RuleSet", config_path: Optional[Path]):
    """The checked `response` section: errors name file, line and key (exit 2)."""
    from ebpfguard.detect.registry import DETECTORS
    from ebpfguard.respond.config import parse_response

    every_kind = ("exec", "exit", "socket", "connect", "flow", "dns", "open", "gpu")
    kinds = {rule.id: getattr(DETECTORS.get(rule.id), "kinds", every_kind) for rule in rules.rules}
    try:
        return parse_response(config["response"], kinds, config_path)
    except ConfigError as exc:
        fail(str(exc))


def _serve_metrics(agent: "Agent", host: str, port: int) -> "MetricsServer":
    """Start the metrics endpoint before the probes load, so a busy port fails fast (exit 2)."""
    from prometheus_client import CollectorRegistry

    from ebpfguard.kernel.load import PROBE_FAMILIES
    from ebpfguard.outputs.metrics import AgentCollector, MetricsAddressError, MetricsServer, MetricsTls

    registry = CollectorRegistry()
    registry.register(AgentCollector(agent.stats, agent.sandboxes, agent, tuple(PROBE_FAMILIES), __version__,
                                     outputs=agent.output_counts))
    try:
        server = MetricsServer(host, port, registry, MetricsTls.from_config(agent.config["metrics"]))
    except MetricsAddressError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits
    click.echo(f"ebpfguard: metrics on {server.url}", err=True)
    return server


@main.command()
def doctor() -> None:
    """Check what this kernel and host support; exit 0 if the agent can run, 2 if not."""
    from ebpfguard.doctor import can_run, run_checks

    checks = run_checks()
    width = max(len(c.name) for c in checks)
    for c in checks:
        status = "ok" if c.ok else ("MISSING" if c.required else "absent")
        line = f"{c.name:<{width}}  {status:<7}  {c.detail}"
        if c.fix and not c.ok:
            line += f"\n{'':<{width}}  {'':<7}  fix: {c.fix}"
        click.echo(line)
    ok = can_run(checks)
    click.echo("\nthe agent can run here" if ok else "\nthe agent cannot run here: fix what is MISSING")
    sys.exit(EXIT_OK if ok else EXIT_USAGE)


@main.command()
@socket_option("The agent's event socket.")
@click.option("--plain", is_flag=True, help="One line per event (time, sandbox, pid, comm, kind, summary); "
              "the default when stdout is not a terminal.")
@click.option("--json", "as_json", is_flag=True, help="The agent's JSON Lines as they come (implies --plain).")
@click.option("--standalone", is_flag=True, help="Run the probes here, in a child agent that ends with the "
              "viewer (for when no agent runs; needs root).")
@config_option
@rules_option
def watch(socket_path: str, plain: bool, as_json: bool, standalone: bool, config_path: Optional[Path],
          rule_files: tuple[Path, ...]) -> None:
    """Watch events and alerts live, from the agent's socket.

    Exit 2 if no agent is running (then `--standalone` runs the probes here).
    `--config` and `--rules` are passed to the agent that `--standalone` starts.
    """
    import contextlib

    from ebpfguard.watch.source import NoAgent, connect
    from ebpfguard.watch.standalone import AgentFailed, own_agent

    agent_args: tuple[str, ...] = ()
    if config_path:
        agent_args += ("--config", str(config_path))
    for rule_file in rule_files:
        agent_args += ("--rules", str(rule_file))
    plain = plain or as_json or not sys.stdout.isatty()
    with contextlib.ExitStack() as stack:
        try:
            if standalone:
                socket_path = stack.enter_context(own_agent(agent_args))
            conn = connect(socket_path)
        except (NoAgent, AgentFailed) as exc:
            fail(str(exc))
        stack.callback(conn.close)
        if plain:
            from ebpfguard.watch.plain import write_json, write_plain

            try:
                (write_json if as_json else write_plain)(conn, sys.stdout)
            except (BrokenPipeError, KeyboardInterrupt):
                pass  # the reader of our pipe went away, or ^C: both are a normal end
            return
        from ebpfguard.watch.app import WatchApp

        where = "standalone agent" if standalone else socket_path
        WatchApp(connection=f"connected to {where}", conn=conn).run()


# -- for sandbox runners: the verdict of one sandbox ---------------------------------------------


@main.command()
@click.argument("sandbox")
@click.option("--from", "from_file", type=click.File("rb"), metavar="FILE|-",
              help="Build the report from an events file (what `run --output` wrote) instead of asking the agent.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True,
              help="text for a terminal, json (a contract: docs/runners.md), markdown for an incident ticket.")
@click.option("--control-socket", "control_path", default=DEFAULT_CONTROL_SOCKET, show_default=True,
              envvar="EBPFGUARD_CONTROL_SOCKET", metavar="PATH", help="The running agent's control socket.")
@config_option
def report(sandbox: str, from_file: Optional[BinaryIO], fmt: str, control_path: str,
           config_path: Optional[Path]) -> None:
    """The verdict and timeline of one sandbox: what it ran, reached and set off.

    Exit 0 clean, 1 flagged, 2 unknown sandbox or no agent.
    """
    import json

    from ebpfguard import client
    from ebpfguard.outputs.report import RENDERERS, build_report

    if from_file is not None:
        from ebpfguard.outputs.history import HistoryBounds, history_from_events

        bounds = HistoryBounds.from_config(config_or_fail(config_path)["history"])
        history = history_from_events(from_file, bounds, sys.stderr)
        record = history.get(sandbox)
        if record is None:
            fail(f"{from_file.name}: no event of sandbox {sandbox!r}")
        result = build_report(record)
    else:
        try:
            result = client.verdict(sandbox, control_path)
        except (client.NoAgent, client.Refused) as exc:
            fail(str(exc))
    if fmt == "json":
        click.echo(json.dumps(result, ensure_ascii=True))
    else:
        click.echo(RENDERERS[fmt](result), nl=False)
    sys.exit(1 if result["verdict"] == "flagged" else 0)


# -- detection: replay and rules ---------------------------------------------------------------



@main.command()
@click.argument("events", type=click.File("rb"), metavar="FILE|-")
@config_option
@rules_option
def replay(events: BinaryIO, config_path: Optional[Path], rule_files: tuple[Path, ...]) -> None:
    """Run the detectors over recorded JSON Lines events; print alerts only.

    Exit 1 if any alert, 0 if none, 2 if the input is unreadable or no line is an event.
    """
    from ebpfguard.detect.config import DetectConfigError
    from ebpfguard.detect.engine import DetectionEngine
    from ebpfguard.detect.replay import replay as run_replay

    config = config_or_fail(config_path)
    rules = _load_rules_or_exit(rule_files)
    try:
        engine = DetectionEngine(rules, config["detect"])  # replay reads no host files: no read_file
    except DetectConfigError as problem:
        click.echo(str(problem), err=True)
        sys.exit(2)
    try:
        code = run_replay(events, engine, sys.stdout, sys.stderr)
    except OSError as problem:
        click.echo(f"cannot read {events.name}: {problem}", err=True)
        sys.exit(2)
    sys.exit(code)


@main.group()
def rules() -> None:
    """Detection rules: list them, check a rules file, run its examples (docs/rules.md)."""


@rules.command("list")
@rules_option
def rules_list(rule_files: tuple[Path, ...]) -> None:
    """List the rules (id, severity, enabled, description)."""
    loaded = _load_rules_or_exit(rule_files)
    width = max((len(rule.id) for rule in loaded.rules), default=2)
    click.echo(f"{'ID':<{width}}  {'SEVERITY':<8}  {'ENABLED':<7}  DESCRIPTION")
    for rule in loaded.rules:
        summary = " ".join(rule.description.split())
        click.echo(f"{rule.id:<{width}}  {rule.severity:<8}  {'yes' if rule.enabled else 'no':<7}  {summary}")


@rules.command("lint")
@click.argument("rule_file", metavar="FILE", type=click.Path(path_type=Path))
def rules_lint(rule_file: Path) -> None:
    """Check a rules file on top of the shipped rules: YAML, fields, operators, types.

    Prints each problem as FILE:LINE: message (FILE:LINE:COLUMN inside a condition or an
    output template). Exit 0 if clean, 1 if problems, 2 if unreadable.
    """
    from ebpfguard.detect.engine import RulesError, load_rules

    _readable_or_exit(rule_file)
    try:
        load_rules([rule_file])
    except RulesError as problems:
        click.echo(str(problems))
        sys.exit(EXIT_FINDINGS)
    click.echo(f"{rule_file}: ok")


@rules.command("test")
@click.argument("rule_file", metavar="FILE", type=click.Path(path_type=Path))
@config_option
def rules_test(rule_file: Path, config_path: Optional[Path]) -> None:
    """Run the `examples` of the rules in FILE and print a pass/fail table.

    Exit 0 if every example passes, 1 if one fails, 2 if the file does not load.
    """
    from ebpfguard.detect.config import DetectConfigError
    from ebpfguard.detect.engine import RulesError, load_rules
    from ebpfguard.detect.ruletest import format_results, run_examples

    _readable_or_exit(rule_file)
    config = config_or_fail(config_path)
    try:
        loaded = load_rules([rule_file])
        results = run_examples(loaded, rule_file, config["detect"])
    except RulesError as problems:
        click.echo(str(problems), err=True)
        sys.exit(EXIT_USAGE)
    except DetectConfigError as problem:
        fail(str(problem))
    if not results:
        click.echo(f"{rule_file}: no rule in it has examples")
        return
    click.echo(format_results(results))
    sys.exit(EXIT_OK if all(result.passed for result in results) else EXIT_FINDINGS)


def _readable_or_exit(rule_file: Path) -> None:
    try:
        rule_file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        click.echo(f"{rule_file}: cannot read: {problem}", err=True)
        sys.exit(EXIT_USAGE)


# -- response: what is in force, and finishing a freeze -----------------------------------------


@main.group(invoke_without_command=True)
@control_socket_option("The agent's control socket.")
@click.option("--json", "as_json", is_flag=True, help="The agent's answer as JSON.")
@click.pass_context
def actions(ctx: click.Context, control_path: str, as_json: bool) -> None:
    """List what the agent's responses hold in force now (blocked flows, denied destinations,
    quarantines, frozen sandboxes); `actions lift ID` ends one. Exit 2 if no agent is running."""
    ctx.obj = control_path
    if ctx.invoked_subcommand is not None:
        return
    import json

    listing = _control_or_fail(control_path, "actions.list")
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    click.echo(f"mode: {listing['mode']}")
    entries = listing["in_force"]
    if not entries:
        click.echo("nothing in force")
    for entry in entries:
        target = " ".join(f"{k}={v}" for k, v in entry["target"].items() if k not in ("sandbox", "allow"))
        expires = f"  expires in {entry['expires_in_s']}s" if "expires_in_s" in entry else ""
        rule = f"  rule {entry['rule']}" if entry.get("rule") else ""
        click.echo(f"{entry['id']:<12}  {entry['action']:<12}  {entry['sandbox']:<24}  {target}{rule}{expires}")


@actions.command("lift")
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@click.pass_obj
def actions_lift(control_path: str, ids: tuple[str, ...]) -> None:
    """End actions in force, by the ids `ebpfguard actions` lists (a frozen sandbox is thawed)."""
    for entry in ids:
        _control_or_fail(control_path, "actions.lift", {"id": entry})
        click.echo(f"lifted {entry}")


def _control_or_fail(path: str, op: str, args: Optional[dict] = None):
    from ebpfguard import client

    try:
        return client.call(op, args, path)
    except (client.NoAgent, client.Refused) as exc:
        fail(str(exc))


def _sandbox_cgroups_or_fail(name: str, config_path: Optional[Path]):
    from ebpfguard.enrich.sandbox import cgroup_root_from_proc
    from ebpfguard.respond.cgroups import contains, find_sandbox, own_cgroup_path

    if name == "host":
        fail("`host` is not a sandbox: thaw or kill its cgroups by hand")
    mount = cgroup_root_from_proc()
    if mount is None:
        fail("no cgroup2 filesystem is mounted")
    found = find_sandbox(mount, config_or_fail(config_path)["sandbox"], name)
    if not found:
        fail(f"no sandbox named {name!r} (as the config's sandbox matchers name cgroups)")
    mine = own_cgroup_path()
    for sandbox in found:
        if mine is not None and contains(sandbox.path, mine):
            fail(f"{name} holds this command's own cgroup ({mine})")
    return mount, found


@main.command()
@click.argument("sandbox", metavar="SANDBOX")
@config_option
def thaw(sandbox: str, config_path: Optional[Path]) -> None:
    """Thaw a frozen sandbox: its processes run again. Works with no agent running."""
    from ebpfguard.respond.cgroups import thaw as thaw_cgroup

    mount, found = _sandbox_cgroups_or_fail(sandbox, config_path)
    for cgroup in found:
        thaw_cgroup(mount, cgroup.path)
        click.echo(f"thawed {cgroup.name} ({cgroup.path})")


@main.command("kill")
@click.argument("sandbox", metavar="SANDBOX")
@config_option
def kill_sandbox(sandbox: str, config_path: Optional[Path]) -> None:
    """SIGKILL every process of a sandbox, frozen ones included (cgroup.kill, Linux 5.14+)."""
    from ebpfguard.respond.cgroups import kill_all

    mount, found = _sandbox_cgroups_or_fail(sandbox, config_path)
    for cgroup in found:
        try:
            kill_all(mount, cgroup.path)
        except OSError as exc:
            fail(f"cannot kill {cgroup.path}: {exc.strerror} (cgroup.kill needs Linux 5.14+)")
        click.echo(f"killed every process of {cgroup.name} ({cgroup.path})")
