"""Command line: a thin layer over the library (`ebpfguard --help`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Optional

import click

from ebpfguard import __version__

if TYPE_CHECKING:
    from ebpfguard.detect.rulefile import RuleSet


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ebpfguard")
def main() -> None:
    """ebpfguard: catch rogue sandboxed AI agents (miners, reverse tunnels) from the kernel."""


# -- detection: replay and rules ---------------------------------------------------------------

rules_option = click.option(
    "--rules", "rule_files", multiple=True, metavar="FILE", envvar="EBPFGUARD_RULES",
    type=click.Path(dir_okay=False, path_type=Path), help="Rules file extending the shipped rules (repeatable).",
)


def _load_rules_or_exit(rule_files: tuple[Path, ...]) -> RuleSet:
    from ebpfguard.detect.engine import RulesError, load_rules

    try:
        return load_rules(rule_files)
    except RulesError as problems:
        click.echo(str(problems), err=True)
        sys.exit(2)


@main.command()
@click.argument("events", type=click.File("rb"), metavar="FILE|-")
@click.option("--config", "config_file", metavar="FILE", envvar="EBPFGUARD_CONFIG",
              type=click.Path(dir_okay=False, path_type=Path), help="Config overlay (its `detect:` section is used).")
@rules_option
def replay(events: BinaryIO, config_file: Optional[Path], rule_files: tuple[Path, ...]) -> None:
    """Run the detectors over recorded JSON Lines events; print alerts only.

    Exit 1 if any alert, 0 if none, 2 if the input is unreadable or no line is an event.
    """
    from ebpfguard.detect.config import DetectConfigError, load_detect_section
    from ebpfguard.detect.engine import DetectionEngine
    from ebpfguard.detect.replay import replay as run_replay

    rules = _load_rules_or_exit(rule_files)
    try:
        section = load_detect_section(config_file) if config_file else None
        engine = DetectionEngine(rules, section)  # replay reads no host files: no read_file
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
    """Detection rules: list them, check a rules file."""


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
    """Check a rules file on top of the shipped rules.

    Prints each problem as FILE:LINE: message. Exit 0 if clean, 1 if problems, 2 if unreadable.
    """
    from ebpfguard.detect.engine import RulesError, load_rules

    try:
        rule_file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as problem:
        click.echo(f"{rule_file}: cannot read: {problem}", err=True)
        sys.exit(2)
    try:
        load_rules([rule_file])
    except RulesError as problems:
        click.echo(str(problems))
        sys.exit(1)
    click.echo(f"{rule_file}: ok")
