"""Command line: a thin layer over the library (`ebpfguard --help`)."""

from __future__ import annotations

import click

from ebpfguard import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ebpfguard")
def main() -> None:
    """ebpfguard: catch rogue sandboxed AI agents (miners, reverse tunnels) from the kernel."""
